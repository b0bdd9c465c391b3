import { randomUUID } from "node:crypto";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { AbortError } from "../errors.js";

/** What the lock folder's owner.json says about the process holding it. */
export const LockOwner = z.object({
  pid: z.number().int(),
  hostname: z.string(),
  token: z.string(),
  createdAt: z.number(),
  updatedAt: z.number(),
});
export type LockOwner = z.infer<typeof LockOwner>;

export interface AcquireLockOptions {
  /** A lock whose owner has not written a heartbeat for this long is taken over. Default 5 minutes. */
  staleAfterMs?: number;
  /** How often the holder refreshes `updatedAt`. Default 15 s. */
  heartbeatMs?: number;
  /** How often a waiter looks again. Default 250 ms. */
  pollMs?: number;
  signal?: AbortSignal | undefined;
  /** Called once, when the lock is found held by another live process and the caller starts waiting. */
  onWait?: (owner: LockOwner | undefined) => void;
}

export interface EnvironmentLock {
  readonly path: string;
  readonly owner: LockOwner;
  /** Removes the lock; calling it again does nothing. */
  release(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const ownerFile = "owner.json";
// A lock folder made less than this long ago may not have its owner.json yet: not stale for lack of one.
const ownerGraceMs = 10_000;

/**
 * Takes a cross-process lock: `mkdir(lockPath)` succeeds for exactly one process; the winner writes owner.json
 * (pid, host, heartbeat). Others wait, taking over a lock whose owner is dead (same host) or silent too long.
 */
export async function acquireEnvironmentLock(lockPath: string, options: AcquireLockOptions = {}): Promise<EnvironmentLock> {
  const { signal, staleAfterMs = 5 * 60_000, heartbeatMs = 15_000, pollMs = 250 } = options;
  let told = false;
  for (;;) {
    if (signal?.aborted) throw new AbortError(signal.reason);
    const now = Date.now();
    const owner: LockOwner = { pid: process.pid, hostname: os.hostname(), token: randomUUID(), createdAt: now, updatedAt: now };
    try {
      await fs.mkdir(lockPath);
      await writeOwner(lockPath, owner);
      return holdLock(lockPath, owner, heartbeatMs);
    } catch (error) {
      if (!isCode(error, "EEXIST")) throw error;
    }
    const current = await readOwner(lockPath);
    if (current === "gone") continue;
    if (await isStale(lockPath, current, staleAfterMs)) {
      await takeOver(lockPath, current);
      continue;
    }
    if (!told) {
      told = true;
      options.onWait?.(current);
    }
    try {
      await sleep(pollMs, undefined, signal ? { signal } : {});
    } catch {
      throw new AbortError(signal?.reason);
    }
  }
}

function holdLock(lockPath: string, owner: LockOwner, heartbeatMs: number): EnvironmentLock {
  let released = false;
  let beating: Promise<void> = Promise.resolve();
  const heartbeat = setInterval(() => {
    beating = writeOwner(lockPath, { ...owner, updatedAt: Date.now() }).catch(() => undefined);
  }, heartbeatMs);
  heartbeat.unref();
  const release = async () => {
    if (released) return;
    released = true;
    clearInterval(heartbeat);
    // A heartbeat still writing must land before the folder goes, never in the next holder's folder.
    await beating;
    // Remove only our own lock: if it was taken over meanwhile, the folder belongs to someone else now.
    const current = await readOwner(lockPath);
    if (current !== "gone" && current?.token === owner.token) await fs.rm(lockPath, { recursive: true, force: true });
  };
  return { path: lockPath, owner, release, [Symbol.asyncDispose]: release };
}

async function writeOwner(lockPath: string, owner: LockOwner): Promise<void> {
  // Write then rename, so a reader never sees half a file.
  const temporary = path.join(lockPath, `${ownerFile}.${process.pid}.${owner.token}.tmp`);
  await fs.writeFile(temporary, JSON.stringify(owner));
  await fs.rename(temporary, path.join(lockPath, ownerFile));
}

async function readOwner(lockPath: string): Promise<LockOwner | undefined | "gone"> {
  try {
    const parsed = LockOwner.safeParse(JSON.parse(await fs.readFile(path.join(lockPath, ownerFile), "utf8")));
    return parsed.success ? parsed.data : undefined;
  } catch (error) {
    if (isCode(error, "ENOENT")) {
      try {
        await fs.stat(lockPath);
      } catch {
        return "gone";
      }
    }
    return undefined;
  }
}

async function isStale(lockPath: string, owner: LockOwner | undefined, staleAfterMs: number): Promise<boolean> {
  if (owner === undefined) {
    const stat = await fs.stat(lockPath).catch(() => undefined);
    return stat !== undefined && Date.now() - stat.mtimeMs > ownerGraceMs;
  }
  if (owner.hostname === os.hostname() && !isAlive(owner.pid)) return true;
  return Date.now() - owner.updatedAt > staleAfterMs;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to another user.
    return isCode(error, "EPERM");
  }
}

// Renames the stale folder aside (only one taker wins the rename), then checks it took the lock it judged.
async function takeOver(lockPath: string, judged: LockOwner | undefined): Promise<void> {
  const aside = `${lockPath}.stale-${process.pid}-${randomUUID().slice(0, 8)}`;
  try {
    await fs.rename(lockPath, aside);
  } catch {
    return;
  }
  const moved = await readOwner(aside);
  const same = judged === undefined ? moved === undefined : moved !== "gone" && moved?.token === judged.token;
  if (!same) {
    // Another waiter took over first and this moved its fresh lock: put it back.
    await fs.rename(aside, lockPath).catch(() => undefined);
    return;
  }
  await fs.rm(aside, { recursive: true, force: true });
}

function isCode(error: unknown, code: string): boolean {
  return typeof error === "object" && error !== null && (error as { code?: unknown }).code === code;
}

import { execa } from "execa";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeEach, expect, test } from "vitest";
import { acquireEnvironmentLock, type LockOwner } from "../../src/runtime/environment-lock.js";

let dir: string;
let lockPath: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "idefics2-lock-"));
  lockPath = path.join(dir, "env.lock");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function plantLock(owner: Partial<LockOwner>): Promise<LockOwner> {
  const full: LockOwner = {
    pid: process.pid,
    hostname: os.hostname(),
    token: "planted",
    createdAt: Date.now(),
    updatedAt: Date.now(),
    ...owner,
  };
  await mkdir(lockPath);
  await writeFile(path.join(lockPath, "owner.json"), JSON.stringify(full));
  return full;
}

test("the holder's pid, host and token are written inside the lock folder, and release removes it", async () => {
  const lock = await acquireEnvironmentLock(lockPath);
  const owner = JSON.parse(await readFile(path.join(lockPath, "owner.json"), "utf8"));
  expect(owner).toEqual({ ...lock.owner, updatedAt: expect.any(Number) });
  expect(owner.pid).toBe(process.pid);
  await lock.release();
  await lock.release();
  expect(await readdir(dir)).toEqual([]);
});

test("concurrent takers hold the lock one at a time, and each waiter is told once", async () => {
  let inside = 0;
  let most = 0;
  let waits = 0;
  const order: number[] = [];
  await Promise.all(
    [0, 1, 2, 3].map(async (index) => {
      await using _lock = await acquireEnvironmentLock(lockPath, { pollMs: 20, onWait: () => waits++ });
      inside++;
      most = Math.max(most, inside);
      order.push(index);
      await sleep(50);
      inside--;
    }),
  );
  expect(most).toBe(1);
  expect(order).toHaveLength(4);
  expect(waits).toBe(3);
});

test("a lock whose owner process is dead is taken over", async () => {
  const dead = await execa("sh", ["-c", "echo $$"]);
  await plantLock({ pid: Number(dead.stdout) });
  const lock = await acquireEnvironmentLock(lockPath, { pollMs: 20 });
  expect(lock.owner.pid).toBe(process.pid);
  await lock.release();
  expect(await readdir(dir)).toEqual([]);
});

test("a lock whose heartbeat is older than staleAfterMs is taken over even if its pid lives", async () => {
  await plantLock({ updatedAt: Date.now() - 60 * 60_000 });
  const lock = await acquireEnvironmentLock(lockPath, { pollMs: 20, staleAfterMs: 10 * 60_000 });
  expect(lock.owner.token).not.toBe("planted");
  await lock.release();
});

test("a live, fresh lock is waited for, and the waiter gets it once the holder releases", async () => {
  const holder = await acquireEnvironmentLock(lockPath);
  const seen: Array<LockOwner | undefined> = [];
  const waiting = acquireEnvironmentLock(lockPath, { pollMs: 20, onWait: (owner) => seen.push(owner) });
  await sleep(150);
  expect(seen).toEqual([holder.owner]);
  await holder.release();
  const waiter = await waiting;
  expect(waiter.owner.token).not.toBe(holder.owner.token);
  await waiter.release();
});

test("waiting is abortable with the caller's signal", async () => {
  const holder = await acquireEnvironmentLock(lockPath);
  const controller = new AbortController();
  const waiting = acquireEnvironmentLock(lockPath, { pollMs: 20, signal: controller.signal });
  setTimeout(() => controller.abort(new Error("enough")), 100);
  await expect(waiting).rejects.toMatchObject({ code: "ABORTED", cause: new Error("enough") });
  await holder.release();
});

test("the holder refreshes its heartbeat, so a long install is not mistaken for a stale lock", async () => {
  const holder = await acquireEnvironmentLock(lockPath, { heartbeatMs: 30 });
  await sleep(120);
  const owner = JSON.parse(await readFile(path.join(lockPath, "owner.json"), "utf8"));
  expect(owner.updatedAt).toBeGreaterThan(holder.owner.updatedAt);
  await holder.release();
});

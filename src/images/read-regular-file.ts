import { constants, type Stats } from "node:fs";
import { type FileHandle, open, stat } from "node:fs/promises";
import { throwIfAborted } from "./throw-if-aborted.js";

const CHUNK_BYTES = 1024 * 1024;
// O_NONBLOCK: even a file swapped for a FIFO after the first check opens at once instead of waiting for a writer.
// O_NOCTTY: a terminal never becomes the controlling one. Both are 0 where the platform lacks them.
const OPEN_FLAGS = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0) | (constants.O_NOCTTY ?? 0);

const ERRNO_REASONS: Record<string, string> = {
  ENOENT: "no such file",
  EACCES: "permission denied",
  EPERM: "permission denied",
  EISDIR: "is a directory",
  ENOTDIR: "a parent is not a folder",
  ELOOP: "too many symbolic links",
  ENAMETOOLONG: "the path is too long",
};

export interface RegularFileLimits {
  /** More bytes than this fail with kind `too-large`, whatever size the file reports. */
  maxBytes: number;
  /** The whole read (stat, open, every chunk) fails with kind `timed-out` after this. */
  timeoutMs: number;
  signal?: AbortSignal | undefined;
}

/** Why a bounded read failed, in words each caller puts in its own typed error. */
export class FileReadError extends Error {
  override name = "FileReadError";
  constructor(
    readonly kind: "not-regular" | "too-large" | "timed-out" | "system",
    /** "a FIFO (named pipe)", "no such file", "timed out after 1000 ms"… */
    readonly reason: string,
    readonly details: { size?: number; errno?: string | undefined } = {},
    options?: ErrorOptions,
  ) {
    super(reason, options);
  }
}

/**
 * Reads a whole file that must be a regular file: FIFOs, devices, sockets and folders are refused from `stat`
 * before they are opened, and again from the opened descriptor (the path may change in between). The read stops
 * past `maxBytes` (a /proc file reports size 0 and may stream on) and fails after `timeoutMs`; aborting rejects
 * at once with AbortError. A read the kernel never answers is left to finish, and its descriptor closed then.
 */
export async function readRegularFile(path: string, { maxBytes, timeoutMs, signal }: RegularFileLimits): Promise<Buffer> {
  throwIfAborted(signal);
  const bound = new Bound(timeoutMs, signal);
  let handle: FileHandle | undefined;
  try {
    requireRegular(await bound.race(stat(path)), maxBytes);
    handle = await bound.race(open(path, OPEN_FLAGS), (late) => late.close());
    requireRegular(await bound.race(handle.stat()), maxBytes);
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, maxBytes + 1 - total));
      const { bytesRead } = await bound.race(handle.read(chunk, 0, chunk.length, null));
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > maxBytes) throw new FileReadError("too-large", `more than ${maxBytes} bytes`);
      chunks.push(chunk.subarray(0, bytesRead));
    }
    return Buffer.concat(chunks, total);
  } catch (error) {
    if (error instanceof FileReadError || bound.aborted) throw error;
    const errno = (error as NodeJS.ErrnoException | undefined)?.code;
    const reason = (errno && ERRNO_REASONS[errno]) ?? (error instanceof Error ? error.message : String(error));
    throw new FileReadError("system", reason, { errno }, { cause: error });
  } finally {
    bound.dispose();
    // close() waits for the handle's pending read: after a timeout it runs once that read ends.
    const closing = bound.pending ? bound.pending.then(() => handle?.close()) : handle?.close();
    if (bound.pending) closing?.catch(() => {});
    else await closing;
  }
}

function requireRegular(stats: Stats, maxBytes: number): void {
  if (!stats.isFile()) throw new FileReadError("not-regular", kindOf(stats));
  if (stats.size > maxBytes) throw new FileReadError("too-large", `${stats.size} bytes`, { size: stats.size });
}

function kindOf(stats: Stats): string {
  if (stats.isFIFO()) return "a FIFO (named pipe)";
  if (stats.isCharacterDevice()) return "a character device";
  if (stats.isBlockDevice()) return "a block device";
  if (stats.isSocket()) return "a socket";
  if (stats.isDirectory()) return "a directory";
  return "not a regular file";
}

// One deadline and one signal over every step; a step that loses the race is remembered so its resources are freed.
class Bound {
  aborted = false;
  pending: Promise<unknown> | undefined;
  readonly #stop: Promise<never>;
  readonly #timer: NodeJS.Timeout;
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort: () => void;

  constructor(timeoutMs: number, signal: AbortSignal | undefined) {
    let reject!: (error: unknown) => void;
    this.#stop = new Promise<never>((_, fail) => (reject = fail));
    this.#stop.catch(() => {});
    this.#timer = setTimeout(() => reject(new FileReadError("timed-out", `timed out after ${timeoutMs} ms`)), timeoutMs);
    this.#signal = signal;
    this.#onAbort = () => {
      this.aborted = true;
      try {
        throwIfAborted(signal);
      } catch (error) {
        reject(error);
      }
    };
    signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  async race<T>(step: Promise<T>, freeLate?: (value: T) => unknown): Promise<T> {
    let settled = false;
    const tracked = step.finally(() => (settled = true));
    try {
      return await Promise.race([tracked, this.#stop]);
    } catch (error) {
      if (!settled) {
        this.pending = tracked.then(freeLate, () => {});
        tracked.catch(() => {});
      }
      throw error;
    }
  }

  dispose(): void {
    clearTimeout(this.#timer);
    this.#signal?.removeEventListener("abort", this.#onAbort);
  }
}

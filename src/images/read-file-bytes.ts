import { open, type FileHandle } from "node:fs/promises";
import { AbortError, ImageError } from "../errors.js";
import { throwIfAborted } from "./throw-if-aborted.js";

const REASONS: Record<string, string> = {
  ENOENT: "no such file",
  EACCES: "permission denied",
  EPERM: "permission denied",
  EISDIR: "is a directory",
  ENOTDIR: "a parent is not a folder",
};

/** Reads an image file, refusing it from its size alone when it is larger than `maxBytes`. */
export async function readFileBytes(path: string, maxBytes: number, signal?: AbortSignal): Promise<Buffer> {
  throwIfAborted(signal);
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (error) {
    throw unreadable(path, error);
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw new ImageError("IMAGE_UNREADABLE", `Cannot read image: not a file: ${path}`);
    if (stats.size > maxBytes) throw tooLarge(path, stats.size, maxBytes);
    const data = await handle.readFile(signal ? { signal } : {});
    // The file may have grown between stat and read.
    if (data.length > maxBytes) throw tooLarge(path, data.length, maxBytes);
    return data;
  } catch (error) {
    if (signal?.aborted) throw new AbortError(signal.reason);
    if (error instanceof ImageError) throw error;
    throw unreadable(path, error);
  } finally {
    await handle.close();
  }
}

function unreadable(path: string, error: unknown): ImageError {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  const reason = (code && REASONS[code]) ?? (error instanceof Error ? error.message : String(error));
  return new ImageError("IMAGE_UNREADABLE", `Cannot read image: ${reason}: ${path}`, {
    fix: code === "ENOENT" ? "Check the path; relative paths start at the current working folder." : undefined,
    cause: error,
  });
}

function tooLarge(path: string, size: number, maxBytes: number): ImageError {
  return new ImageError("IMAGE_TOO_LARGE", `${path} is ${size} bytes, more than the \`maxBytes\` limit of ${maxBytes}`, {
    fix: "Raise the `maxBytes` option, or use a smaller image.",
  });
}

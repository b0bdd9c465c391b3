import { ImageError } from "../errors.js";
import { shorten } from "./describe-source.js";
import { DEFAULT_READ_TIMEOUT_MS } from "./load-image-options.js";
import { FileReadError, readRegularFile } from "./read-regular-file.js";

/**
 * Reads an image file within `maxBytes` and `timeoutMs`. Only a regular file is read: a FIFO, device, socket or
 * folder is refused before it is opened, so a path like /dev/zero or a named pipe fails at once instead of hanging.
 */
export async function readFileBytes(
  path: string,
  maxBytes: number,
  signal?: AbortSignal,
  timeoutMs = DEFAULT_READ_TIMEOUT_MS,
): Promise<Buffer> {
  try {
    return await readRegularFile(path, { maxBytes, timeoutMs, signal });
  } catch (error) {
    if (!(error instanceof FileReadError)) throw error;
    // The path as errors quote it: printable and short, whatever its length.
    const shown = shorten(path);
    if (error.kind === "too-large") {
      // A size from stat, or a file that reported less (a /proc file reports 0) and went on past the cap.
      const what = error.details.size === undefined ? "goes on past" : `is ${error.details.size} bytes, more than`;
      throw new ImageError("IMAGE_TOO_LARGE", `${shown} ${what} the \`maxBytes\` limit of ${maxBytes}`, {
        fix: "Raise the `maxBytes` option, or use a smaller image.",
      });
    }
    throw new ImageError("IMAGE_UNREADABLE", unreadableMessage(shown, error), { fix: fixFor(error), cause: error.cause });
  }
}

function unreadableMessage(path: string, error: FileReadError): string {
  if (error.kind === "not-regular") return `Cannot read image: ${error.reason}, not a file: ${path}`;
  return `Cannot read image: ${error.reason}: ${path}`;
}

function fixFor(error: FileReadError): string | undefined {
  if (error.kind === "not-regular") {
    return "Pass a regular file: FIFOs, devices, sockets and folders are refused, since reading one may never end.";
  }
  if (error.kind === "timed-out") return "Raise the `readTimeoutMs` image option, or check the file system the file lives on.";
  return error.details.errno === "ENOENT" ? "Check the path; relative paths start at the current working folder." : undefined;
}

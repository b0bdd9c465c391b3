import { fileURLToPath } from "node:url";
import type { Sharp } from "sharp";
import { ImageError } from "../errors.js";
import { fetchImage } from "./fetch-image.js";
import { decodeDataUrl, isDataUrl } from "./data-url.js";
import { describeSource, URL_STRING } from "./describe-source.js";
import type { ImageSource } from "./image-source.js";
import type { ResolvedLoadImageOptions } from "./load-image-options.js";
import { readFileBytes } from "./read-file-bytes.js";

/**
 * Gets a source's encoded bytes (read, downloaded, decoded from a data URL, or the caller's own, never copied nor
 * changed), or its sharp instance.
 */
export async function readSource(source: ImageSource, options: ResolvedLoadImageOptions, signal?: AbortSignal): Promise<Buffer | Sharp> {
  const { maxBytes, fetchTimeoutMs: timeoutMs, readTimeoutMs, maxRedirects, blockPrivateNetwork } = options;
  if (typeof source === "string" || source instanceof URL) {
    if (isDataUrl(source)) return decodeDataUrl(String(source), maxBytes, describeSource(source));
    const isUrl = source instanceof URL || URL_STRING.test(source);
    if (!isUrl) return readFileBytes(source, maxBytes, signal, readTimeoutMs);
    // A string that does not parse goes to fetchImage as it is, which refuses it with its URL redacted.
    const url = source instanceof URL || !URL.canParse(source) ? source : new URL(source);
    if (url instanceof URL && url.protocol === "file:") return readFileBytes(filePath(url), maxBytes, signal, readTimeoutMs);
    return fetchImage(url, { timeoutMs, maxBytes, maxRedirects, blockPrivateNetwork }, signal);
  }
  if (source instanceof Uint8Array) {
    if (source.byteLength > maxBytes) {
      throw new ImageError("IMAGE_TOO_LARGE", `The image is ${source.byteLength} bytes, more than the \`maxBytes\` limit of ${maxBytes}`, {
        fix: "Raise the `maxBytes` option, or use a smaller image.",
      });
    }
    // A view on the caller's memory: sharp only reads it.
    return Buffer.isBuffer(source) ? source : Buffer.from(source.buffer, source.byteOffset, source.byteLength);
  }
  return source;
}

// A file: URL names a local path; one with a host (file://server/share) is not readable here.
function filePath(url: URL): string {
  try {
    return fileURLToPath(url);
  } catch (error) {
    throw new ImageError("IMAGE_UNREADABLE", `Cannot read ${describeSource(url)}: ${(error as Error).message}`, {
      fix: "Pass a file: URL without a host, or the path itself.",
    });
  }
}

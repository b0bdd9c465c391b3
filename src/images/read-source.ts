import { fileURLToPath } from "node:url";
import type { Sharp } from "sharp";
import { ImageError } from "../errors.js";
import { fetchImage } from "./fetch-image.js";
import type { ImageSource } from "./image-source.js";
import type { ResolvedLoadImageOptions } from "./load-image-options.js";
import { readFileBytes } from "./read-file-bytes.js";

const URL_STRING = /^[a-z][a-z\d+.-]*:\/\//i;

/** Gets a source's encoded bytes (read, downloaded, or the caller's own, never copied nor changed), or its sharp instance. */
export async function readSource(source: ImageSource, options: ResolvedLoadImageOptions, signal?: AbortSignal): Promise<Buffer | Sharp> {
  const { maxBytes, fetchTimeoutMs: timeoutMs, maxRedirects } = options;
  if (typeof source === "string" || source instanceof URL) {
    const isUrl = source instanceof URL || URL_STRING.test(source);
    if (!isUrl) return readFileBytes(source, maxBytes, signal);
    const url = source instanceof URL ? source : new URL(source);
    if (url.protocol === "file:") return readFileBytes(fileURLToPath(url), maxBytes, signal);
    return fetchImage(url, { timeoutMs, maxBytes, maxRedirects }, signal);
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

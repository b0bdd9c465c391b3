import { ImageError } from "../errors.js";
import { decodeImage } from "./decode-image.js";
import { describeSource } from "./describe-source.js";
import { ImageSource } from "./image-source.js";
import { LoadImageOptions } from "./load-image-options.js";
import type { NormalizedImage } from "./normalized-image.js";
import { parseOptions } from "./parse-options.js";
import { readSource } from "./read-source.js";
import { resizeToMaxEdge } from "./resize-to-max-edge.js";
import { throwIfAborted } from "./throw-if-aborted.js";

/**
 * Reads a picture from a path, URL (http(s), file: or data:), bytes or sharp instance and returns the raw RGB pixels that
 * `transformers.image_utils.load_image` would give for it (EXIF orientation applied, alpha dropped, first frame).
 */
export async function loadImage(source: ImageSource, options: LoadImageOptions = {}, signal?: AbortSignal): Promise<NormalizedImage> {
  const limits = parseOptions(LoadImageOptions, options, "image");
  if (!ImageSource.safeParse(source).success) {
    throw new ImageError("IMAGE_UNREADABLE", `Cannot read an image from ${describeValue(source)}`, {
      fix: "Pass a file path, an http(s) or data: URL, a Buffer or Uint8Array of encoded bytes, or a sharp instance.",
    });
  }
  throwIfAborted(signal);
  const description = describeSource(source);
  const input = await readSource(source, limits, signal);
  const image = await decodeImage(input, description, limits.maxPixels, signal);
  return limits.maxEdge === undefined ? image : resizeToMaxEdge(image, limits.maxEdge);
}

function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "string") return "an empty string";
  return typeof value === "object" ? `an object (${Object.prototype.toString.call(value)})` : `a ${typeof value}`;
}

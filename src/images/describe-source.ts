import type { ImageSource } from "./image-source.js";
import { redactUrl } from "./redact-url.js";

const MAX_LENGTH = 120;

/** A string with a scheme and `//` is a URL (http, https, file, or one that is refused); anything else is a path. */
export const URL_STRING = /^[a-z][a-z\d+.-]*:\/\//i;

// A short, secret-free name for a source, used in every error message about it: URLs go through redactUrl.
export function describeSource(source: ImageSource): string {
  if (typeof source === "string") return shorten(URL_STRING.test(source) ? redactUrl(source) : source);
  if (source instanceof URL) return shorten(redactUrl(source));
  if (source instanceof Uint8Array) return `a ${source.byteLength}-byte buffer`;
  return "a sharp instance";
}

function shorten(text: string): string {
  return text.length > MAX_LENGTH ? `${text.slice(0, MAX_LENGTH - 1)}…` : text;
}

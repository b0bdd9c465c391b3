import { quotedInput } from "../printable.js";
import { describeDataUrl, isDataUrl } from "./data-url.js";
import type { ImageSource } from "./image-source.js";
import { redactUrl } from "./redact-url.js";

/** A string with a scheme and `//` is a URL (http, https, file, or one that is refused); anything else is a path. */
export const URL_STRING = /^[a-z][a-z\d+.-]*:\/\//i;

// A short, secret-free name for a source, used in every error message about it: URLs go through redactUrl, a data
// URL shows its media type and first characters, and nothing is quoted past 120 characters.
export function describeSource(source: ImageSource): string {
  if ((typeof source === "string" || source instanceof URL) && isDataUrl(source)) return describeDataUrl(String(source));
  if (typeof source === "string") return shorten(URL_STRING.test(source) ? redactUrl(source) : source);
  if (source instanceof URL) return shorten(redactUrl(source));
  if (source instanceof Uint8Array) return `a ${source.byteLength}-byte buffer`;
  return "a sharp instance";
}

/** A path or a redacted URL as an error quotes it: printable, and cut to its start (with its length) past 120 characters. */
export function shorten(text: string): string {
  return quotedInput(text);
}

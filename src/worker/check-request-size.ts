import { ImageError, InvalidInputError } from "../errors.js";
import { MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES } from "../protocol/frame-codec.js";
import type { GenerateParams } from "../protocol/messages.js";

// Room in a frame's header for the request around the params: {"type":"request","id":…,"method":"…","params":…}.
const ENVELOPE_BYTES = 128;
// The most bytes one UTF-16 code unit can take in JSON ("\u0001" is six).
const MAX_JSON_BYTES_PER_UNIT = 6;

/**
 * Refuses a generation too large for one protocol frame before anything is sent, naming what makes it so: its text
 * past 16 MiB of JSON (InvalidInputError naming the largest string, `messages[0].content[1].text` or
 * `stopStrings[3]`), or its pictures past 1 GiB of pixels (ImageError IMAGE_TOO_LARGE).
 */
export function checkRequestSize(params: GenerateParams, payloadBytes: number): void {
  if (payloadBytes > MAX_PAYLOAD_BYTES) {
    const count = params.images.length;
    throw new ImageError(
      "IMAGE_TOO_LARGE",
      `The ${count} picture${count === 1 ? "" : "s"} of this request decode to ${size(payloadBytes)} of pixels (width × height × 3 bytes each), over the ${size(MAX_PAYLOAD_BYTES)} one request may carry`,
      { fix: "Send fewer or smaller pictures, or load with `images.maxEdge` to downscale large ones." },
    );
  }
  const strings = stringsOf(params, []);
  // Most requests are far below the limit whatever their characters: no need to serialise them to know.
  const units = strings.reduce((sum, entry) => sum + entry.text.length, 0);
  if (units * MAX_JSON_BYTES_PER_UNIT + ENVELOPE_BYTES + 64 * 1024 < MAX_HEADER_BYTES) return;
  const bytes = Buffer.byteLength(JSON.stringify(params), "utf8") + ENVELOPE_BYTES;
  if (bytes <= MAX_HEADER_BYTES) return;
  const largest = strings
    .map((entry) => ({ path: entry.path, bytes: Buffer.byteLength(JSON.stringify(entry.text), "utf8") }))
    .reduce((a, b) => (b.bytes > a.bytes ? b : a));
  const inMessages = largest.path[0] === "messages";
  throw new InvalidInputError(
    inMessages ? "INVALID_MESSAGES" : "INVALID_OPTIONS",
    `The request is ${size(bytes)} as JSON, over the ${size(MAX_HEADER_BYTES)} one request may be: \`${fieldName(largest.path)}\` alone is ${size(largest.bytes)}`,
    { fix: inMessages ? "Send less text: shorten the longest part, or split the conversation." : "Give shorter stop strings." },
  );
}

interface Entry {
  path: (string | number)[];
  text: string;
}

function stringsOf(value: unknown, path: (string | number)[]): Entry[] {
  if (typeof value === "string") return [{ path, text: value }];
  if (Array.isArray(value)) return value.flatMap((item, index) => stringsOf(item, [...path, index]));
  if (typeof value === "object" && value !== null) {
    return Object.entries(value).flatMap(([key, item]) => stringsOf(item, [...path, key]));
  }
  return [];
}

// The path as the caller wrote it: `messages[0].content[1].text`, and generation options by their own name.
function fieldName(path: (string | number)[]): string {
  const shown = path[0] === "options" ? path.slice(1) : path;
  return shown.map((part, index) => (typeof part === "number" ? `[${part}]` : index === 0 ? part : `.${part}`)).join("");
}

function size(bytes: number): string {
  const gib = bytes / 2 ** 30;
  if (gib >= 1) return `${Number(gib.toFixed(2))} GiB`;
  return `${Number((bytes / 2 ** 20).toFixed(1))} MiB`;
}

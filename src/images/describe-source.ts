import type { ImageSource } from "./image-source.js";

const MAX_LENGTH = 120;

// A short, credential-free name for a source, used in every error message about it.
export function describeSource(source: ImageSource): string {
  if (typeof source === "string") return shorten(/^https?:\/\//i.test(source) ? describeUrl(source) : source);
  if (source instanceof URL) return shorten(describeUrl(source));
  if (source instanceof Uint8Array) return `a ${source.byteLength}-byte buffer`;
  return "a sharp instance";
}

export function describeUrl(url: string | URL): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
  } catch {
    return String(url);
  }
}

function shorten(text: string): string {
  return text.length > MAX_LENGTH ? `${text.slice(0, MAX_LENGTH - 1)}…` : text;
}

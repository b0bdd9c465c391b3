import type { Sharp } from "sharp";
import sharp from "./sharp.js";
import { z } from "zod";

// `instanceof` fails when two copies of sharp are installed, so a sharp-shaped object also counts.
export function isSharpInstance(value: unknown): value is Sharp {
  if (value instanceof sharp) return true;
  if (value === null || typeof value !== "object") return false;
  const candidate = value as Record<string, unknown>;
  return typeof candidate.clone === "function" && typeof candidate.metadata === "function" && typeof candidate.raw === "function";
}

/**
 * Where a picture comes from: a file path, an http(s) URL (string or URL object; a `file:` URL is a path), a
 * `data:` URL (`data:image/png;base64,…`, string or URL object), encoded bytes (Buffer or Uint8Array), or a sharp
 * instance (its own pipeline's output is used as is).
 */
export type ImageSource = string | URL | Uint8Array | Sharp;

// Annotated, so declarations name `Uint8Array` as written: TypeScript before 5.7 has no generic Uint8Array<T>.
export const ImageSource: z.ZodType<ImageSource> = z.union([
  z.string().min(1, "expected a file path, an http(s) URL or a data: URL"),
  z.instanceof(URL),
  // Any backing memory (a Buffer from a pool, a SharedArrayBuffer view), not only a plain ArrayBuffer.
  z.custom<Uint8Array>((value) => value instanceof Uint8Array, "expected a Buffer or Uint8Array"),
  z.custom<Sharp>(isSharpInstance, "expected a sharp instance"),
]);

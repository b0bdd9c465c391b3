import { z } from "zod";

export const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_PIXELS = 100_000_000;
export const DEFAULT_FETCH_TIMEOUT_MS = 30_000;
export const DEFAULT_READ_TIMEOUT_MS = 30_000;
export const DEFAULT_MAX_REDIRECTS = 5;

/** Limits on what loadImage accepts; every field has a safe default. */
export const LoadImageOptions = z.strictObject({
  /** Largest encoded image accepted (file, bytes or download), in bytes. */
  maxBytes: z.number().int().positive().default(DEFAULT_MAX_BYTES),
  /** Largest image accepted, in pixels; checked from the header before any pixel is decoded. */
  maxPixels: z.number().int().positive().default(DEFAULT_MAX_PIXELS),
  /** Downscale (lanczos3) images whose longest side exceeds this. Off by default: it breaks parity with the reference. */
  maxEdge: z.number().int().positive().optional(),
  /** Time allowed for a whole URL download: name lookups, connections, redirects, headers and body. */
  fetchTimeoutMs: z.number().int().positive().default(DEFAULT_FETCH_TIMEOUT_MS),
  /** Time allowed to read a picture file (a file on a stalled network or FUSE mount fails after it). */
  readTimeoutMs: z.number().int().positive().default(DEFAULT_READ_TIMEOUT_MS),
  /** Redirects followed when fetching a URL. */
  maxRedirects: z.number().int().nonnegative().default(DEFAULT_MAX_REDIRECTS),
  /**
   * Refuse URLs whose host is, or resolves to, a loopback, private, link-local (cloud metadata), unique-local or
   * other non-public address, at every redirect and connection. Default false; turn it on for URLs from others.
   */
  blockPrivateNetwork: z.boolean().default(false),
});
export type LoadImageOptions = z.input<typeof LoadImageOptions>;
export type ResolvedLoadImageOptions = z.output<typeof LoadImageOptions>;

import { z } from "zod";
import { DEFAULT_FETCH_TIMEOUT_MS, DEFAULT_MAX_BYTES, DEFAULT_MAX_REDIRECTS } from "./load-image-options.js";

/** Limits on one image download. */
export const FetchImageOptions = z.strictObject({
  /** Time allowed for the whole download, headers and body. */
  timeoutMs: z.number().int().positive().default(DEFAULT_FETCH_TIMEOUT_MS),
  /** The body is cut off, and the fetch fails, past this many bytes. */
  maxBytes: z.number().int().positive().default(DEFAULT_MAX_BYTES),
  /** Redirects followed; each must stay on http or https. */
  maxRedirects: z.number().int().nonnegative().default(DEFAULT_MAX_REDIRECTS),
});
export type FetchImageOptions = z.input<typeof FetchImageOptions>;

import { z } from "zod";
import { DEFAULT_FETCH_TIMEOUT_MS, DEFAULT_MAX_BYTES, DEFAULT_MAX_REDIRECTS } from "./load-image-options.js";

/** Limits on one image download. */
export const FetchImageOptions = z.strictObject({
  /** Time allowed for the whole download: name lookups, connections, redirects, headers and body. */
  timeoutMs: z.number().int().positive().default(DEFAULT_FETCH_TIMEOUT_MS),
  /** The body is cut off, and the fetch fails, past this many bytes. */
  maxBytes: z.number().int().positive().default(DEFAULT_MAX_BYTES),
  /** Redirects followed; each must stay on http or https. */
  maxRedirects: z.number().int().nonnegative().default(DEFAULT_MAX_REDIRECTS),
  /**
   * Refuse loopback, private, link-local (cloud metadata), unique-local and other non-public targets, checked on
   * the resolved address of every hop and connection. Default false; turn it on for URLs that come from others.
   */
  blockPrivateNetwork: z.boolean().default(false),
});
export type FetchImageOptions = z.input<typeof FetchImageOptions>;

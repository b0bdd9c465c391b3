import { z } from "zod";
import { ImageLimits } from "../options.js";
import { WellFormedString } from "../protocol/option-ranges.js";

// Options of connect(). As in src/options.ts, the shape is a const of its own so the declarations keep the docs.

const connectShape = {
  /**
   * The server's OpenAI base URL, with its `/v1`: `http://127.0.0.1:8000/v1` for `idefics2 serve`, or any other
   * OpenAI-compatible server of Idefics2 (TGI's `http://host:8080/v1`).
   */
  baseURL: WellFormedString.refine((value) => URL.canParse(value) && /^https?:$/.test(new URL(value).protocol), {
    message: "must be an http(s) URL such as http://127.0.0.1:8000/v1",
  }),
  /** Sent as `Authorization: Bearer <apiKey>`: the server's `--api-key`. Default none. */
  apiKey: WellFormedString.min(1).optional(),
  /** The model to ask for. Default: the first one the server lists in `GET /v1/models`. */
  model: WellFormedString.min(1).optional(),
  /** More headers for every request (a proxy's own authentication, say). */
  headers: z.record(z.string(), z.string()).optional(),
  /**
   * Limits on the pictures read on this side: files, bytes and sharp instances are read (and, in a chat session,
   * every picture decoded once) within them before they are sent as `data:` URLs. `{ maxBytes, maxPixels, maxEdge,
   * fetchTimeoutMs, readTimeoutMs, maxRedirects, blockPrivateNetwork }`, as `Idefics2.load()` takes them.
   */
  images: ImageLimits.default({}),
  /** How long connect() may take to reach the server (`GET /v1/models`), in milliseconds. Default 30000. */
  connectTimeoutMs: z.number().int().positive().max(2_147_483_647).default(30_000),
};
export const ConnectOptions: z.ZodObject<typeof connectShape, z.core.$strict> = z.strictObject(connectShape);
/** Options of `connect()`. */
export type ConnectOptions = z.input<typeof ConnectOptions>;
export type ResolvedConnectOptions = z.output<typeof ConnectOptions>;

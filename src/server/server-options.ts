import { z } from "zod";
import type { LoadCallOptions } from "../model.js";
import { ImageLimits, type LoadOptions, MAX_TIMER_MS, TimerMs } from "../options.js";
import { MaxNewTokens, WellFormedString } from "../protocol/option-ranges.js";

// Options of the OpenAI-compatible server. As in src/options.ts, the shape is a const of its own so that the
// published declarations keep each option's doc comment for hover.

/** The default largest request body: 64 MiB, a picture of the default `images.maxBytes` as a data: URL nearly fits. */
export const DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024;

const serverShape = {
  /**
   * The address to listen on. Default `"127.0.0.1"`: this machine only. Any address that is not loopback
   * (`127.x.x.x`, `::1`, `localhost`), such as `"0.0.0.0"`, is refused unless `apiKey` is set.
   */
  host: WellFormedString.min(1).default("127.0.0.1"),
  /** The port to listen on; 0 takes a free one (the server's `url` says which). Default 8000. */
  port: z.number().int().min(0).max(65_535).default(8000),
  /**
   * The key clients must send as `Authorization: Bearer <key>` (OpenAI clients' `apiKey`), compared in constant
   * time. Every endpoint but `/health` needs it. Default none: no key is asked for, and only loopback may be bound.
   */
  apiKey: WellFormedString.min(1).optional(),
  /**
   * The model's name in `GET /v1/models` and in every answer's `model` field. Default: the hub id it was loaded
   * from, or its folder's name (never the whole path). Requests may name any model: the server has one.
   */
  modelName: WellFormedString.min(1).optional(),
  /** The largest request body accepted, in bytes; a larger one is refused with 413. Default 64 MiB. */
  maxBodyBytes: z.number().int().positive().default(DEFAULT_MAX_BODY_BYTES),
  /** `max_tokens` when a request gives neither `max_tokens` nor `max_completion_tokens` (1–1,000,000). Default 500. */
  defaultMaxTokens: MaxNewTokens.default(500),
  /**
   * Time one request may take, in milliseconds (its pictures, waiting in the queue and generating); past it the
   * generation is cancelled and the request answers 504. Default none.
   */
  requestTimeoutMs: TimerMs.optional(),
  /**
   * On `close()` (and SIGTERM for `idefics2 serve`), how long requests in flight may go on finishing, in
   * milliseconds; those still running then are cancelled (before their next token) and answered 503. New requests
   * are refused at once. Default 10000.
   */
  shutdownTimeoutMs: z.number().int().min(0).max(MAX_TIMER_MS).default(10_000),
  /**
   * Limits on the pictures of requests. The server fetches `http(s)` image URLs itself, with `fetchTimeoutMs`,
   * `maxBytes`, `maxRedirects` and `blockPrivateNetwork`; every picture is then decoded by the model under the
   * model's own image limits (`serve()` loads the model with these). `blockPrivateNetwork` is ON unless set to false
   * here: URLs come from clients, and one into the server's own network (loopback, private ranges, the cloud metadata
   * address) is refused with IMAGE_URL_REFUSED.
   */
  images: ImageLimits.default({}),
  /** Close the model when the server closes. Default false for `createServer()` (the model is yours), true for `serve()`. */
  closeModel: z.boolean().default(false),
};

export const ServerOptions: z.ZodObject<typeof serverShape, z.core.$strict> = z.strictObject(serverShape);
/** Options of `createServer(model, options)`. */
export type ServerOptions = z.input<typeof ServerOptions>;
export type ResolvedServerOptions = z.output<typeof ServerOptions>;

/** Options of `serve(options)`: the server's, and how to load the model it serves. */
export type ServeOptions = Omit<ServerOptions, "closeModel"> & {
  /**
   * How to load the model, as `Idefics2.load()` takes it (default: the embedded tiny model). Its
   * `images.blockPrivateNetwork` is turned on unless you set it.
   */
  load?: LoadOptions & LoadCallOptions;
};

/** Whether `host` is a loopback address or name: binding it needs no API key. @internal */
export function isLoopbackHost(host: string): boolean {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  return bare.toLowerCase() === "localhost" || /^127(?:\.\d{1,3}){3}$/.test(bare) || bare === "::1" || bare === "::ffff:127.0.0.1";
}

import type { Idefics2 } from "../model.js";

/** A running OpenAI-compatible server, from `createServer()` or `serve()`. */
export interface Idefics2Server {
  /** Where it listens, such as `http://127.0.0.1:8000`. */
  readonly url: string;
  /** The base URL for OpenAI clients and `connect()`: `url` followed by `/v1`. */
  readonly baseURL: string;
  /** The port it listens on (the one taken when `port` was 0). */
  readonly port: number;
  /** The model's name in `/v1/models` and in answers. */
  readonly modelName: string;
  /** The model it serves. */
  readonly model: Idefics2;
  /** The Prometheus metrics as `GET /metrics` gives them. */
  metrics(): Promise<string>;
  /**
   * Shuts down: new requests are refused at once (503), requests in flight may finish within `timeoutMs` (default
   * the `shutdownTimeoutMs` option), those still running are then cancelled before their next token, and the
   * connections close. Closes the model too when the server owns it (`serve()`, or `closeModel: true`). Safe to call
   * twice; resolves when everything is closed.
   */
  close(options?: { timeoutMs?: number }): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

import { Idefics2 } from "../model.js";
import { checkServerOptions } from "./check-server-options.js";
import type { Idefics2Server } from "./idefics2-server.js";
import type { ServeOptions, ServerOptions } from "./server-options.js";

/**
 * Serves a loaded model over HTTP with OpenAI's chat-completions API: `POST /v1/chat/completions` (streaming or
 * not, pictures as `image_url` parts with http(s) or data: URLs), `GET /v1/models`, `GET /health` and Prometheus
 * `GET /metrics`. Listens on 127.0.0.1:8000 by default; resolves once it listens.
 *
 * ```ts
 * await using model = await Idefics2.load();
 * await using server = await createServer(model, { port: 0 });
 * const client = new OpenAI({ baseURL: server.baseURL, apiKey: "unused" });
 * ```
 */
export async function createServer(model: Idefics2, options: ServerOptions = {}): Promise<Idefics2Server> {
  checkServerOptions(options);
  // Hono and prom-client load with the first server, never with the SDK alone.
  const { startServer } = await import("./start-server.js");
  return startServer(model, options);
}

/**
 * Loads a model (`options.load`, as `Idefics2.load()` takes it) and serves it as `createServer()` does; closing the
 * server closes the model. The server's options are checked before the model loads.
 */
export async function serve(options: ServeOptions = {}): Promise<Idefics2Server> {
  const { load = {}, ...serverOptions } = options;
  const resolved = checkServerOptions(serverOptions);
  // The model decodes what clients send: the server's picture limits apply to it too, unless the load sets its own.
  const images = { ...resolved.images, blockPrivateNetwork: resolved.images.blockPrivateNetwork ?? true, ...load.images };
  const model = await Idefics2.load({ ...load, images });
  try {
    return await createServer(model, { ...serverOptions, closeModel: true });
  } catch (error) {
    await model.close();
    throw error;
  }
}

export type { Idefics2Server } from "./idefics2-server.js";
export { ServerOptions } from "./server-options.js";
export type { ServeOptions } from "./server-options.js";
export type { Idefics2Extension } from "./chat-completion.js";

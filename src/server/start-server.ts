import { createHash, timingSafeEqual } from "node:crypto";
import { createServer as createHttpServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { basename, isAbsolute } from "node:path";
import { getRequestListener } from "@hono/node-server";
import { Hono, type MiddlewareHandler } from "hono";
import { ClosedError, InvalidInputError } from "../errors.js";
import { DEFAULT_FETCH_TIMEOUT_MS, DEFAULT_MAX_BYTES, DEFAULT_MAX_REDIRECTS } from "../images/load-image-options.js";
import type { Idefics2 } from "../model.js";
import { ApiError, apiErrorFor } from "./api-error.js";
import { chatCompletion, type CompletionContext, errorResponse } from "./chat-completion.js";
import { checkServerOptions } from "./check-server-options.js";
import type { Idefics2Server } from "./idefics2-server.js";
import type { ServerOptions } from "./server-options.js";
import { ServerMetrics } from "./server-metrics.js";

// The OpenAI-compatible server on Hono, over node:http (through @hono/node-server, which aborts a request's signal
// when its client disconnects). Loaded only when a server is created: the SDK alone never imports Hono or prom-client.

// After the shutdown's wait, cancelled requests get this long to send their last bytes before connections are cut.
const CANCEL_GRACE_MS = 2_000;

export async function startServer(model: Idefics2, options: ServerOptions): Promise<Idefics2Server> {
  const resolved = checkServerOptions(options);
  const metrics = new ServerMetrics();
  const shutdown = new AbortController();
  const modelName = resolved.modelName ?? defaultModelName(model.info.model);
  const startedAt = Math.floor(Date.now() / 1000);
  let closing = false;
  const context: CompletionContext = {
    model,
    modelName,
    metrics,
    pictures: {
      maxBytes: resolved.images.maxBytes ?? DEFAULT_MAX_BYTES,
      fetchTimeoutMs: resolved.images.fetchTimeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS,
      maxRedirects: resolved.images.maxRedirects ?? DEFAULT_MAX_REDIRECTS,
      // On unless turned off explicitly: picture URLs come from the clients.
      blockPrivateNetwork: resolved.images.blockPrivateNetwork ?? true,
    },
    maxBodyBytes: resolved.maxBodyBytes,
    defaultMaxTokens: resolved.defaultMaxTokens,
    requestTimeoutMs: resolved.requestTimeoutMs,
    shutdown: shutdown.signal,
  };

  const app = new Hono();
  app.onError((error) =>
    errorResponse(apiErrorFor(error, { clientLeft: false, shuttingDown: closing }, () => metrics.retryAfterSeconds())),
  );
  app.notFound((c) =>
    errorResponse(new ApiError(404, `Unknown endpoint: ${c.req.method} ${c.req.path}`, { type: "not_found_error", code: "unknown_url" })),
  );
  app.get("/health", (c) => (closing ? c.json({ status: "shutting_down" }, 503) : c.json({ status: "ok" })));
  app.use("*", async (_c, next) => {
    if (!closing) return next();
    const refused = errorResponse(new ApiError(503, "The server is shutting down", { code: "shutting_down" }));
    refused.headers.set("connection", "close");
    return refused;
  });
  if (resolved.apiKey !== undefined) app.use("*", bearerAuth(resolved.apiKey));
  const modelEntry = () => ({
    id: modelName,
    object: "model",
    created: startedAt,
    owned_by: "idefics2",
    ...(model.info.maxContext ? { max_model_len: model.info.maxContext } : {}),
  });
  app.get("/v1/models", (c) => c.json({ object: "list", data: [modelEntry()] }));
  app.get("/v1/models/:id{.+}", (c) =>
    c.req.param("id") === modelName
      ? c.json(modelEntry())
      : errorResponse(
          new ApiError(
            404,
            `The model ${JSON.stringify(c.req.param("id"))} does not exist: this server serves ${JSON.stringify(modelName)}`,
            {
              type: "not_found_error",
              param: "model",
              code: "model_not_found",
            },
          ),
        ),
  );
  app.post("/v1/chat/completions", (c) => chatCompletion(c.req.raw, context));
  app.get("/metrics", async (c) => c.body(await metrics.registry.metrics(), 200, { "content-type": metrics.registry.contentType }));

  // Every response until it is sent (or its connection closes): what a shutdown waits for.
  const inFlight = new Set<ServerResponse>();
  let drained: (() => void) | undefined;
  const listener = getRequestListener(app.fetch, { overrideGlobalObjects: false });
  const server = createHttpServer((request, response) => {
    inFlight.add(response);
    response.on("close", () => {
      inFlight.delete(response);
      if (inFlight.size === 0) drained?.();
    });
    void listener(request, response);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) =>
      reject(
        new InvalidInputError("INVALID_OPTIONS", `Cannot listen on ${resolved.host}:${resolved.port}: ${error.code ?? error.message}`, {
          fix: error.code === "EADDRINUSE" ? "Choose another `port` (0 takes a free one), or stop what listens there." : undefined,
          cause: error,
        }),
      ),
    );
    server.listen(resolved.port, resolved.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;

  const idle = (ms: number) =>
    new Promise<void>((resolve) => {
      if (inFlight.size === 0) return resolve();
      const timer = setTimeout(resolve, ms);
      drained = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  let closed: Promise<void> | undefined;
  const close = (closeOptions: { timeoutMs?: number } = {}): Promise<void> => {
    closed ??= (async () => {
      closing = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // Requests in flight may finish within the bound; those still running then are cancelled before their
      // next token and answered 503 (a stream gets an error event), and the connections are closed.
      await idle(closeOptions.timeoutMs ?? resolved.shutdownTimeoutMs);
      shutdown.abort(new ClosedError("The server"));
      await idle(CANCEL_GRACE_MS);
      server.closeAllConnections();
      await stopped;
      if (resolved.closeModel) await model.close();
    })();
    return closed;
  };
  return {
    url,
    baseURL: `${url}/v1`,
    port: address.port,
    modelName,
    model,
    metrics: () => metrics.registry.metrics(),
    close,
    [Symbol.asyncDispose]: () => close(),
  };
}

// `Authorization: Bearer <key>`, compared in constant time (both sides hashed first, so lengths never differ).
function bearerAuth(apiKey: string): MiddlewareHandler {
  const expected = createHash("sha256").update(apiKey).digest();
  return async (c, next) => {
    const match = /^Bearer\s+(.+)$/i.exec(c.req.header("authorization") ?? "");
    const given = createHash("sha256")
      .update(match?.[1]?.trim() ?? "")
      .digest();
    if (match && timingSafeEqual(given, expected)) return next();
    return errorResponse(
      new ApiError(401, match ? "Incorrect API key provided" : "Missing API key: send it as `Authorization: Bearer <key>`", {
        type: "authentication_error",
        code: "invalid_api_key",
        headers: { "WWW-Authenticate": 'Bearer realm="idefics2"' },
      }),
    );
  };
}

// A hub id as it is; a local folder by its name only (its path is nobody's business).
function defaultModelName(model: string): string {
  return isAbsolute(model) ? basename(model) || "idefics2" : model;
}

import { Decoder, MaxBatchSize } from "../protocol/option-ranges.js";
import { parseOrThrow } from "../parse-or-throw.js";
import { printable } from "../printable.js";
import { serve } from "../server/index.js";
import type { ServeOptions } from "../server/server-options.js";
import { numberFlag, parseCommandLine } from "./command-line.js";
import { loadOptionsFrom, MODEL_FLAGS_USAGE, modelFlags, withoutUndefined } from "./model-flags.js";
import { createProgressDisplay, showingProgress } from "./progress-display.js";

export const SERVE_USAGE = `Usage: idefics2 serve [--model DIR_OR_ID] [--host ADDRESS] [--port N] [--api-key KEY] [options]

An OpenAI-compatible server of the model: POST /v1/chat/completions (streaming or not, pictures as image_url parts
with http(s) or data: URLs), GET /v1/models, GET /health, GET /metrics (Prometheus). SIGTERM or Ctrl-C shuts it down:
requests in flight may finish within --shutdown-timeout-ms, then the rest are cancelled.

  --host ADDRESS                 where to listen (default 127.0.0.1); any other address needs an API key
  --port N                       (default 8000; 0 takes a free port)
  --api-key KEY                  clients must send \`Authorization: Bearer KEY\` (or set IDEFICS2_API_KEY,
                                 which keeps the key out of the process list)
  --model-name NAME              the name in /v1/models and answers (default: the hub id or folder name)
  --max-tokens N                 max_tokens when a request gives none (default 500)
  --max-body-bytes N             largest request body (default 67108864, 64 MiB)
  --request-timeout-ms N         time a request may take; past it, 504 (default none)
  --shutdown-timeout-ms N        on SIGTERM, time requests in flight get to finish (default 10000)
  --allow-private-image-urls     fetch picture URLs into loopback and private networks (refused by default:
                                 URLs come from clients)
  --max-queue N                  requests queued or running at once; more get 429 (default 256)
  --max-batch-size N             requests the fast decoder runs together on a GPU (default 8)
  --decoder auto|fast|reference
${MODEL_FLAGS_USAGE}`;

const flags = {
  ...modelFlags,
  host: { type: "string" },
  port: { type: "string" },
  "api-key": { type: "string" },
  "model-name": { type: "string" },
  "max-tokens": { type: "string" },
  "max-body-bytes": { type: "string" },
  "request-timeout-ms": { type: "string" },
  "shutdown-timeout-ms": { type: "string" },
  "allow-private-image-urls": { type: "boolean" },
  "max-queue": { type: "string" },
  "max-batch-size": { type: "string" },
  decoder: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

export async function runServe(args: string[]): Promise<number> {
  const { values } = parseCommandLine(args, flags, "serve");
  if (values.help) {
    process.stdout.write(`${SERVE_USAGE}\n`);
    return 0;
  }
  const apiKey = values["api-key"] ?? (process.env.IDEFICS2_API_KEY || undefined);
  const display = createProgressDisplay();
  const options: ServeOptions = withoutUndefined({
    host: values.host,
    port: numberFlag("port", values.port),
    apiKey,
    modelName: values["model-name"],
    defaultMaxTokens: numberFlag("max-tokens", values["max-tokens"]),
    maxBodyBytes: numberFlag("max-body-bytes", values["max-body-bytes"]),
    requestTimeoutMs: numberFlag("request-timeout-ms", values["request-timeout-ms"]),
    shutdownTimeoutMs: numberFlag("shutdown-timeout-ms", values["shutdown-timeout-ms"]),
    images: values["allow-private-image-urls"] ? { blockPrivateNetwork: false } : undefined,
  });
  const load = withoutUndefined({
    ...loadOptionsFrom(values, "serve"),
    maxQueue: numberFlag("max-queue", values["max-queue"]),
    maxBatchSize:
      values["max-batch-size"] === undefined
        ? undefined
        : parseOrThrow(MaxBatchSize, numberFlag("max-batch-size", values["max-batch-size"]), "INVALID_OPTIONS", "--max-batch-size"),
    decoder: values.decoder === undefined ? undefined : parseOrThrow(Decoder, values.decoder, "INVALID_OPTIONS", "--decoder"),
  });
  // The server's options are checked before the model loads (serve() does): a bad flag fails at once.
  const server = await showingProgress(
    display,
    (onProgress) => serve({ ...options, load: { ...load, onProgress } }),
    (started) => `Loaded ${printable(started.model.info.model)} in ${Math.round(started.model.info.loadMs)} ms`,
  );
  process.stdout.write(
    `idefics2 serve: listening on ${server.url} (OpenAI base URL ${server.baseURL}, model ${JSON.stringify(server.modelName)})\n`,
  );

  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        // A second signal: leave now (the worker's process group goes with this process).
        process.stderr.write(`idefics2 serve: ${signal} again, leaving at once\n`);
        process.exit(1);
      }
      stopping = true;
      const bound = options.shutdownTimeoutMs ?? 10_000;
      process.stderr.write(`idefics2 serve: ${signal}: shutting down (requests in flight get up to ${bound} ms)\n`);
      server.close().then(
        () => {
          process.stderr.write("idefics2 serve: stopped\n");
          resolve();
        },
        (error: unknown) => {
          process.stderr.write(`idefics2 serve: shutdown failed: ${printable(error instanceof Error ? error.message : String(error))}\n`);
          resolve();
        },
      );
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  });
  return 0;
}

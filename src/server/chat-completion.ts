import { randomUUID } from "node:crypto";
import { InvalidInputError, StructuredOutputError } from "../errors.js";
import { fetchImage } from "../images/fetch-image.js";
import type { ImageSource } from "../images/image-source.js";
import type { Messages } from "../messages.js";
import type { GenerationResult, Idefics2 } from "../model.js";
import { ApiError, type ApiErrorBody, apiErrorFor } from "./api-error.js";
import { parseChatRequest, type ChatRequest } from "./chat-request.js";
import { readJsonBody } from "./read-json-body.js";
import type { ServerMetrics } from "./server-metrics.js";
import { StopHoldback } from "./stop-holdback.js";

/** How the server fetches a request's http(s) pictures. @internal */
export interface PictureFetchLimits {
  maxBytes: number;
  fetchTimeoutMs: number;
  maxRedirects: number;
  blockPrivateNetwork: boolean;
}

/** What answering a chat completion needs from its server. @internal */
export interface CompletionContext {
  model: Pick<Idefics2, "stream">;
  modelName: string;
  metrics: ServerMetrics;
  pictures: PictureFetchLimits;
  maxBodyBytes: number;
  defaultMaxTokens: number;
  requestTimeoutMs: number | undefined;
  /** Aborted when the server's shutdown stops waiting for requests in flight. */
  shutdown: AbortSignal;
}

/**
 * `idefics2` in an answer: what OpenAI's shape has no place for. The generated token ids are in
 * `choices[0].token_ids` (vLLM's field).
 */
export interface Idefics2Extension {
  /**
   * The SDK's finish reason: `stop_string` where OpenAI's says `stop`, `incomplete_structure` where it says `length`
   * for a JSON `response_format` cut off before its JSON closed.
   */
  finish_reason: GenerationResult["finishReason"];
  /**
   * What the content leaves out at its end when a stop string ended the answer (OpenAI's rule): the stop string and
   * whatever followed it in its last token. The SDK's text is the content followed by this.
   */
  stop_text?: string;
  image_tokens: number;
  timings: { preprocess_ms: number; prefill_ms: number; decode_ms: number; total_ms: number; decode_tokens_per_second: number };
}

const JSON_HEADERS = { "content-type": "application/json" };

/** Answers POST /v1/chat/completions: a JSON completion, or server-sent events with `stream: true`. @internal */
export async function chatCompletion(raw: Request, context: CompletionContext): Promise<Response> {
  const arrived = performance.now();
  let request: ChatRequest | undefined;
  try {
    const body = await readJsonBody(raw, context.maxBodyBytes);
    request = parseChatRequest(body, context.defaultMaxTokens);
    return await generate(raw, request, context, arrived);
  } catch (error) {
    const stream = request?.stream ?? false;
    const apiError = apiErrorFor(responseFormatError(error, request), causes(raw, context), () => context.metrics.retryAfterSeconds());
    context.metrics.finished(apiError.status, stream, (performance.now() - arrived) / 1000);
    return errorResponse(apiError);
  }
}

/** An error answer with OpenAI's body. @internal */
export function errorResponse(error: ApiError): Response {
  return new Response(JSON.stringify(error.body), { status: error.status, headers: { ...JSON_HEADERS, ...error.headers } });
}

function causes(raw: Request, context: CompletionContext) {
  return { clientLeft: raw.signal.aborted, shuttingDown: context.shutdown.aborted };
}

async function generate(raw: Request, request: ChatRequest, context: CompletionContext, arrived: number): Promise<Response> {
  const { metrics } = context;
  // A client that disconnects, or the end of the shutdown's wait, stops the generation before its next token. (Plain
  // listeners, removed when the request leaves: the server's shutdown signal lives as long as the server.)
  const controller = new AbortController();
  const stop = (): void => controller.abort();
  raw.signal.addEventListener("abort", stop);
  context.shutdown.addEventListener("abort", stop);
  if (raw.signal.aborted || context.shutdown.aborted) stop();
  const { signal } = controller;
  let phase: "queued" | "running" | "done" = "queued";
  metrics.queueDepth.inc();
  const leave = (): void => {
    if (phase === "queued") metrics.queueDepth.dec();
    else if (phase === "running") metrics.running.dec();
    phase = "done";
    raw.signal.removeEventListener("abort", stop);
    context.shutdown.removeEventListener("abort", stop);
  };
  try {
    const messages = await fetchPictures(request.messages, context.pictures, signal);
    const answer = context.model.stream(messages, { ...request.options, signal, timeoutMs: context.requestTimeoutMs });
    const iterator = answer[Symbol.asyncIterator]();
    // Nothing is sent before the first text (or the result, or the error): a request refused by the SDK (a bad
    // picture, a full queue, a prompt too long) gets its own status, not a stream that fails.
    const first = await nextAnswer(iterator);
    const firstAt = performance.now();
    metrics.queueDepth.dec();
    metrics.running.inc();
    phase = "running";
    metrics.timeToFirstToken.observe((firstAt - arrived) / 1000);
    const id = `chatcmpl-${randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);
    if (request.stream) return streamed({ raw, request, context, arrived, iterator, first, firstAt, id, created, leave });
    let next = first;
    let last = firstAt;
    while (!next.done) {
      next = await nextAnswer(iterator);
      if (!next.done) last = observeGap(metrics, last);
    }
    const result = next.value;
    leave();
    countTokens(metrics, result);
    metrics.finished(200, false, (performance.now() - arrived) / 1000);
    const holdback = new StopHoldback(request.stop);
    const { content, cut } = holdback.finish(result.text, result.finishReason);
    return new Response(
      JSON.stringify({
        id,
        object: "chat.completion",
        created,
        model: context.modelName,
        choices: [
          {
            index: 0,
            message: { role: "assistant", content, refusal: null },
            logprobs: null,
            finish_reason: openAiFinishReason(result),
            token_ids: result.tokenIds,
          },
        ],
        usage: usage(result),
        idefics2: extension(result, cut),
      }),
      { status: 200, headers: JSON_HEADERS },
    );
  } finally {
    // A streamed answer leaves when its stream ends; every other way out leaves here.
    if (!request.stream || phase === "queued") leave();
  }
}

interface StreamedAnswer {
  raw: Request;
  request: ChatRequest;
  context: CompletionContext;
  arrived: number;
  iterator: AsyncIterator<string, GenerationResult>;
  first: IteratorResult<string, GenerationResult>;
  firstAt: number;
  id: string;
  created: number;
  leave: () => void;
}

// Server-sent events as OpenAI sends them: a first chunk with the role, one per piece of text, a last one with the
// finish reason (and here the token ids), the usage when asked for, then `[DONE]`. A failure after the first chunk
// is sent as an `{ error }` event, which OpenAI's clients raise.
function streamed(answer: StreamedAnswer): Response {
  const { raw, request, context, arrived, iterator, first, firstAt, id, created, leave } = answer;
  const { metrics } = context;
  const encoder = new TextEncoder();
  const holdback = new StopHoldback(request.stop);
  let cancelled = false;
  const chunk = (delta: Record<string, unknown>, finishReason: string | null, extra: Record<string, unknown> = {}) => ({
    id,
    object: "chat.completion.chunk",
    created,
    model: context.modelName,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason, ...extra }],
    ...(request.includeUsage ? { usage: null } : {}),
  });
  const pump = async (controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> => {
    const send = (payload: unknown): void => {
      if (!cancelled) controller.enqueue(encoder.encode(`data: ${typeof payload === "string" ? payload : JSON.stringify(payload)}\n\n`));
    };
    let status = 200;
    try {
      send(chunk({ role: "assistant", content: "" }, null));
      let next = first;
      let last = firstAt;
      while (!next.done) {
        const piece = holdback.push(next.value);
        if (piece !== "") send(chunk({ content: piece }, null));
        next = await nextAnswer(iterator);
        if (!next.done) last = observeGap(metrics, last);
      }
      const result = next.value;
      const { rest, cut } = holdback.finish(result.text, result.finishReason);
      if (rest !== "") send(chunk({ content: rest }, null));
      send({
        ...chunk({}, openAiFinishReason(result), { token_ids: result.tokenIds }),
        idefics2: extension(result, cut),
      });
      if (request.includeUsage)
        send({ id, object: "chat.completion.chunk", created, model: context.modelName, choices: [], usage: usage(result) });
      send("[DONE]");
      countTokens(metrics, result);
    } catch (error) {
      const apiError = apiErrorFor(error, causes(raw, context), () => metrics.retryAfterSeconds());
      status = apiError.status;
      send(apiError.body satisfies ApiErrorBody);
    } finally {
      leave();
      metrics.finished(status, true, (performance.now() - arrived) / 1000);
      if (!cancelled) controller.close();
    }
  };
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      void pump(controller);
    },
    cancel() {
      // The client went away: leaving the stream cancels the generation (the request's signal does too).
      cancelled = true;
      void iterator.return?.();
    },
  });
  return new Response(body, {
    status: 200,
    headers: { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "x-accel-buffering": "no" },
  });
}

// The request's http(s) pictures, fetched by the server within its limits (and, by default, never into its own
// network); data: URLs are left to the SDK, which decodes them in place. The first failure cancels the others.
async function fetchPictures(messages: Messages, limits: PictureFetchLimits, signal: AbortSignal): Promise<Messages> {
  const urls = messages.flatMap((message) =>
    message.content.flatMap((part) =>
      part.type === "image" && typeof part.source === "string" && /^https?:/i.test(part.source) ? [part.source] : [],
    ),
  );
  if (urls.length === 0) return messages;
  // The request's signal (one per request) and this fetch's own, which the first failure aborts.
  const controller = new AbortController();
  const both = AbortSignal.any([signal, controller.signal]);
  const fetched = new Map<string, Promise<Buffer>>();
  for (const url of urls) {
    if (!fetched.has(url)) {
      fetched.set(
        url,
        fetchImage(
          url,
          {
            timeoutMs: limits.fetchTimeoutMs,
            maxBytes: limits.maxBytes,
            maxRedirects: limits.maxRedirects,
            blockPrivateNetwork: limits.blockPrivateNetwork,
          },
          both,
        ),
      );
    }
  }
  let bytes: Map<string, Buffer>;
  try {
    bytes = new Map(await Promise.all([...fetched].map(async ([url, promise]) => [url, await promise] as const)));
  } finally {
    controller.abort();
    for (const promise of fetched.values()) promise.catch(() => undefined);
  }
  return messages.map((message) => ({
    ...message,
    content: message.content.map((part) =>
      part.type === "image" && typeof part.source === "string" && bytes.has(part.source)
        ? { type: "image" as const, source: bytes.get(part.source) as ImageSource }
        : part,
    ),
  }));
}

// A structured answer the SDK will not turn into `object` (cut off by max_tokens before the JSON closed, or one its
// second check refuses) is still the answer OpenAI's API gives: its text, with finish_reason "length" when cut off
// (the idefics2 extension says `incomplete_structure`). The client parses and validates it, as connect() does.
async function nextAnswer(iterator: AsyncIterator<string, GenerationResult>): Promise<IteratorResult<string, GenerationResult>> {
  try {
    return await iterator.next();
  } catch (error) {
    if (error instanceof StructuredOutputError) return { done: true, value: error.result as GenerationResult };
    throw error;
  }
}

// The SDK calls the schema it cannot use `schema`: the request gave it as `response_format`, and the answer says so.
function responseFormatError(error: unknown, request: ChatRequest | undefined): unknown {
  const format = request?.responseSchema;
  if (!format || !(error instanceof InvalidInputError) || !error.message.includes("`schema`")) return error;
  return new ApiError(400, `Invalid schema for response_format '${format.name}': ${error.summary}`, {
    param: "response_format",
    code: error.code,
  });
}

function observeGap(metrics: ServerMetrics, last: number): number {
  const now = performance.now();
  metrics.timePerOutputToken.observe((now - last) / 1000);
  return now;
}

function countTokens(metrics: ServerMetrics, result: GenerationResult): void {
  metrics.promptTokens.inc(result.usage.promptTokens);
  metrics.generationTokens.inc(result.usage.completionTokens);
}

// OpenAI has `stop` and `length`: a stop string is a stop, an answer cut off by max_tokens is a length, a structured
// one (`incomplete_structure`, its JSON not closed) included.
function openAiFinishReason(result: GenerationResult): "stop" | "length" {
  return result.finishReason === "stop" || result.finishReason === "stop_string" ? "stop" : "length";
}

function usage(result: GenerationResult) {
  return {
    prompt_tokens: result.usage.promptTokens,
    completion_tokens: result.usage.completionTokens,
    total_tokens: result.usage.totalTokens,
  };
}

function extension(result: GenerationResult, cut: string): Idefics2Extension {
  const { timings } = result;
  return {
    finish_reason: result.finishReason,
    ...(cut === "" ? {} : { stop_text: cut }),
    image_tokens: result.usage.imageTokens,
    timings: {
      preprocess_ms: timings.preprocessMs,
      prefill_ms: timings.prefillMs,
      decode_ms: timings.decodeMs,
      total_ms: timings.totalMs,
      decode_tokens_per_second: timings.decodeTokensPerSecond,
    },
  };
}

import { ChatSession, type ChatOptions, type TurnExtras } from "../chat-session.js";
import { AbortError, ClosedError, GenerationError, type Idefics2Error, InvalidInputError, TimeoutError } from "../errors.js";
import { type GenerationStream, streamOf } from "../generation-stream.js";
import type { ImageSource } from "../images/image-source.js";
import { Messages } from "../messages.js";
import type { GenerationResult } from "../model.js";
import { GenerateCallOptionsSchema, type ImageLimits } from "../options.js";
import { parseOrThrow } from "../parse-or-throw.js";
import type { GenerateCallOptions } from "../prepare-generation.js";
import type { FinishReason, TokenEventData } from "../protocol/messages.js";
import { checkSignal, MAX_TIMER_MS } from "../worker/check-call-options.js";
import { fetchFailure, remoteError } from "./remote-error.js";
import { conversationPictures } from "../conversation-pictures.js";
import { pictureUrls, sessionPictureUrls } from "./remote-pictures.js";
import { serverSentData } from "./server-sent-events.js";
import { resolveStructure, type Structure, type StructuredResult, type StructureOptions } from "../structured-output.js";

/** What connect() found on the server. */
export interface RemoteModelInfo {
  /** The model's name on the server, sent with every request. */
  model: string;
  /** The server's OpenAI base URL. */
  baseURL: string;
  /** The model's context in tokens when the server says (`max_model_len` in `/v1/models`: this package's server, vLLM), else null. */
  maxContext: number | null;
}

/** How a remote model reaches its server. @internal */
export interface RemoteSettings {
  info: RemoteModelInfo;
  headers: Record<string, string>;
  images: ImageLimits;
}

interface RunExtras extends TurnExtras {
  onDelta?: (delta: TokenEventData) => void;
  stop?: AbortSignal;
}

/**
 * An Idefics2 model behind an OpenAI-compatible server (`idefics2 serve`, or TGI serving Idefics2), with the local
 * model's `generate()`, `stream()` and `chat()` and the same result types. Create with `connect()`.
 *
 * What differs from a local model: `tokenIds` are the server's `choices[0].token_ids` when it sends them (this
 * package's server and vLLM do) and empty otherwise; `usage.imageTokens` and the `timings` breakdown come from this
 * package's server (elsewhere imageTokens is 0 and the timings are measured here: prefillMs is the time to the
 * first text, preprocessMs 0). `schema` (zod or JSON Schema) goes as `response_format` `json_schema`, and
 * `result.object` is parsed and checked here as locally; `choices`, `regex`, `numBeams` and `noRepeatNgramSize`
 * have no OpenAI parameter and are refused (INVALID_OPTIONS); `topK`, `minNewTokens` and `repetitionPenalty` go as
 * vLLM's `top_k`, `min_tokens` and `repetition_penalty`. A chat session's turn is held to the server's own context
 * check (the prompt must fit), not to prompt + maxNewTokens.
 */
export class RemoteIdefics2 {
  readonly #settings: RemoteSettings;
  readonly #lifetime = new AbortController();
  #closed = false;

  /** @internal Use `connect()`. */
  constructor(settings: RemoteSettings) {
    this.#settings = settings;
  }

  /** The server's model: its name, base URL and context. */
  get info(): RemoteModelInfo {
    return this.#settings.info;
  }

  /**
   * Generates an answer to the conversation; resolves with text, token ids, finish reason, usage and timings. With
   * `schema` the result also carries `object`, parsed and checked as the local model's (`z.infer` of a zod schema).
   */
  async generate<const O extends GenerateCallOptions = GenerateCallOptions>(messages: Messages, options?: O): Promise<StructuredResult<O>> {
    return this.#run(messages, options === undefined ? {} : options) as Promise<StructuredResult<O>>;
  }

  /**
   * Streams the answer: iterate for text deltas; `result` resolves with the same result generate() gives. Aborting,
   * or leaving the loop early, closes the request, and the server stops the generation before its next token.
   */
  stream<const O extends GenerateCallOptions = GenerateCallOptions>(
    messages: Messages,
    options?: O,
  ): GenerationStream<StructuredResult<O>> {
    const given: GenerateCallOptions = options === undefined ? {} : options;
    return streamOf(given, (onDelta, stop) => this.#run(messages, given, { onDelta, stop }) as Promise<StructuredResult<O>>);
  }

  /**
   * A conversation that keeps its history, as `model.chat()` gives locally. Each picture is decoded once on this side
   * and sent with every turn as a lossless PNG (`data:` URL), so exportHistory() works as it does locally.
   */
  chat(options: ChatOptions = {}): ChatSession {
    if (this.#closed) throw new ClosedError("The remote model");
    return new ChatSession(
      (messages, turnOptions, extras) =>
        streamOf(turnOptions, (onDelta, stop) => this.#run(messages, turnOptions, { ...extras, onDelta, stop })),
      () => this.#settings.info.maxContext,
      options,
    );
  }

  /** Cancels the calls in flight (they reject with ClosedError) and refuses new ones. Nothing runs here to end. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#lifetime.abort(new ClosedError("The remote model"));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // A session's turn must leave room for its answer, as a local model's worker checks exactly. The server knows only
  // its prompt, so the check is made here from what the session knows: the history's tokens at the last answer (the
  // next prompt holds them and the new turn) and maxNewTokens when the turn gives it. A turn that would pass the
  // context is refused before it is sent; one this cannot tell (no answer yet, no maxNewTokens) is the server's.
  #checkAnswerFits(usedTokens: number | undefined, maxNewTokens: number | undefined): void {
    const context = this.#settings.info.maxContext;
    if (usedTokens === undefined || maxNewTokens === undefined || context === null) return;
    if (usedTokens + maxNewTokens < context) return;
    const left = context - usedTokens;
    throw new GenerationError(
      "CONTEXT_OVERFLOW",
      `This turn needs more than ${usedTokens + maxNewTokens} tokens (over ${usedTokens} of conversation and up to ${maxNewTokens} new) but the model's context is ${context} tokens`,
      {
        fix:
          left > 1
            ? `Lower maxNewTokens below ${left}, or start again with a shorter history (reset(), or fewer turns).`
            : "Start again with a shorter history: reset(), or fewer turns.",
      },
    );
  }

  async #run(messages: Messages, options: GenerateCallOptions, extras: RunExtras = {}): Promise<GenerationResult> {
    const started = performance.now();
    if (this.#closed) throw new ClosedError("The remote model");
    const parsedMessages = parseOrThrow(Messages, messages, "INVALID_MESSAGES", "messages");
    const {
      images,
      signal: given,
      timeoutMs,
      schema,
      choices,
      regex,
      ...generation
    } = parseOrThrow(GenerateCallOptionsSchema, options, "INVALID_OPTIONS", "generation option");
    const structure = remoteStructure({ schema, choices, regex, minNewTokens: generation.minNewTokens } as StructureOptions);
    const signal = checkSignal(given);
    // Options with no OpenAI parameter (numBeams, noRepeatNgramSize, …) are refused, never dropped.
    const unsent = Object.keys(generation).filter(
      (key) => !SENT_OPTIONS.has(key) && (generation as Record<string, unknown>)[key] !== undefined,
    );
    if (unsent.length > 0) {
      throw new InvalidInputError("INVALID_OPTIONS", `\`${unsent[0]}\` has no OpenAI parameter, so a remote model cannot use it`, {
        fix: `Leave \`${unsent[0]}\` out, or load the model locally with Idefics2.load().`,
      });
    }
    if (extras.reserveNewTokens) this.#checkAnswerFits(extras.usedTokens, generation.maxNewTokens);
    // The call ends on its own signal, its timeout, a stream's reader leaving, or close().
    const timeout = new AbortController();
    const timer =
      timeoutMs !== undefined && timeoutMs <= MAX_TIMER_MS
        ? setTimeout(() => timeout.abort(new TimeoutError("TIMED_OUT", `The generate call timed out after ${timeoutMs} ms`)), timeoutMs)
        : undefined;
    // Plain listeners, removed when the call ends: the model's lifetime signal outlives every call.
    const end = new AbortController();
    const ended = end.signal;
    const enders = [this.#lifetime.signal, timeout.signal, signal, extras.stop].filter((ender) => ender !== undefined);
    const stop = (): void => end.abort();
    for (const ender of enders) ender.addEventListener("abort", stop);
    if (enders.some((ender) => ender.aborted)) stop();
    const failure = (error: unknown): Idefics2Error => {
      if (timeout.signal.aborted) return timeout.signal.reason as TimeoutError;
      if (this.#lifetime.signal.aborted) return new ClosedError("The remote model");
      if (ended.aborted) return new AbortError(signal?.aborted ? signal.reason : extras.stop?.reason);
      return fetchFailure(error, this.#settings.info.baseURL);
    };
    try {
      const sources = conversationPictures(parsedMessages, images as ImageSource[] | undefined);
      const urls = extras.pictures
        ? await sessionPictureUrls(sources, this.#settings.images, extras.pictures, ended)
        : await pictureUrls(sources, this.#settings.images, ended);
      const body = requestBody(this.#settings.info.model, parsedMessages, urls, generation, structure);
      let response: Response;
      try {
        response = await fetch(`${this.#settings.info.baseURL}/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json", accept: "text/event-stream", ...this.#settings.headers },
          body: JSON.stringify(body),
          signal: ended,
        });
      } catch (error) {
        throw failure(error);
      }
      if (!response.ok || !response.body) {
        const text = await response.text().catch(() => "");
        throw remoteError({ status: response.status, body: parseJson(text) ?? text, retryAfter: response.headers.get("retry-after") });
      }
      const result = await readAnswer(response.body, started, extras.onDelta).catch((error: unknown) => {
        if (error instanceof StreamFailure) throw remoteError({ status: undefined, body: error.body });
        throw failure(error);
      });
      // The answer's text becomes `object` as locally, or the same StructuredOutputError.
      return structure ? structure.finish(cutOffStructure(result)) : result;
    } catch (error) {
      // An abort or timeout ends the call however far it got (pictures, request, stream).
      if (ended.aborted) throw failure(error);
      throw error;
    } finally {
      clearTimeout(timer);
      for (const ender of enders) ender.removeEventListener("abort", stop);
    }
  }
}

/** The generation options a request carries (as OpenAI's parameters, or vLLM's for topK, minNewTokens, repetitionPenalty). */
const SENT_OPTIONS = new Set([
  "maxNewTokens",
  "minNewTokens",
  "doSample",
  "temperature",
  "topP",
  "topK",
  "repetitionPenalty",
  "seed",
  "stopStrings",
]);

// The call's structure, as the local model's; OpenAI's `response_format` carries only a JSON Schema, so choices and a
// regex are refused rather than turned into a JSON answer whose text would differ from the local one's.
function remoteStructure(options: StructureOptions & { minNewTokens?: number }): Structure | undefined {
  const structure = resolveStructure(options);
  const unsent = options.choices !== undefined ? "choices" : options.regex !== undefined ? "regex" : undefined;
  if (unsent !== undefined) {
    throw new InvalidInputError(
      "INVALID_OPTIONS",
      `\`${unsent}\` has no OpenAI parameter (\`response_format\` takes only a JSON Schema), so a remote model cannot use it`,
      {
        fix: `Use \`schema\` (a z.enum() for choices, a z.string().regex() for a pattern: the answer is then a JSON string), or load the model locally with Idefics2.load().`,
      },
    );
  }
  return structure;
}

// This package's server says `incomplete_structure`; another says only "length", which for a structured answer is
// a cut-off one when its JSON does not parse (the grammar allows nothing else to stop it early).
function cutOffStructure(result: GenerationResult): GenerationResult {
  if (result.finishReason !== "length" || parseJson(result.text) !== undefined) return result;
  return { ...result, finishReason: "incomplete_structure" };
}

/** An `{ error }` event in the stream: the server failed after it began to answer. */
class StreamFailure extends Error {
  readonly body: unknown;
  constructor(body: unknown) {
    super("The server's stream carried an error");
    this.body = body;
  }
}

interface FinalChunk {
  finishReason: string | null;
  tokenIds: number[] | undefined;
  extension: Idefics2Extension | undefined;
  usage: { prompt_tokens?: number; completion_tokens?: number; total_tokens?: number } | undefined;
}

interface Idefics2Extension {
  finish_reason?: FinishReason;
  stop_text?: string;
  image_tokens?: number;
  timings?: { preprocess_ms: number; prefill_ms: number; decode_ms: number; total_ms: number; decode_tokens_per_second: number };
}

// Reads the server-sent events into the SDK's result; each piece of text goes to `onDelta` as it comes.
async function readAnswer(
  body: ReadableStream<Uint8Array>,
  started: number,
  onDelta: ((delta: TokenEventData) => void) | undefined,
): Promise<GenerationResult> {
  let text = "";
  let pieces = 0;
  let firstAt: number | undefined;
  const final: FinalChunk = { finishReason: null, tokenIds: undefined, extension: undefined, usage: undefined };
  for await (const data of serverSentData(body)) {
    if (data.trim() === "[DONE]") break;
    const chunk = parseJson(data) as Record<string, unknown> | undefined;
    if (!chunk || typeof chunk !== "object") continue;
    if (chunk.error !== undefined) throw new StreamFailure(chunk);
    if (chunk.usage && typeof chunk.usage === "object") final.usage = chunk.usage as FinalChunk["usage"];
    if (chunk.idefics2 && typeof chunk.idefics2 === "object") final.extension = chunk.idefics2 as Idefics2Extension;
    const choice = (Array.isArray(chunk.choices) ? chunk.choices[0] : undefined) as Record<string, unknown> | undefined;
    if (!choice) continue;
    const content = (choice.delta as { content?: unknown } | undefined)?.content;
    if (typeof content === "string" && content !== "") {
      firstAt ??= performance.now();
      text += content;
      pieces += 1;
      onDelta?.({ text: content, tokenIds: [] });
    }
    if (Array.isArray(choice.token_ids)) final.tokenIds = [...(final.tokenIds ?? []), ...(choice.token_ids as number[])];
    if (typeof choice.finish_reason === "string") final.finishReason = choice.finish_reason;
  }
  const ended = performance.now();
  const { extension, usage } = final;
  // The server left the stop string out of the content (OpenAI's rule); the SDK's text keeps it, as locally.
  if (extension?.stop_text) {
    text += extension.stop_text;
    onDelta?.({ text: extension.stop_text, tokenIds: [] });
  }
  const tokenIds = final.tokenIds ?? [];
  const completionTokens = usage?.completion_tokens ?? (tokenIds.length || pieces);
  const promptTokens = usage?.prompt_tokens ?? 0;
  const prefillMs = (firstAt ?? ended) - started;
  const decodeMs = ended - (firstAt ?? ended);
  const timings = extension?.timings;
  return {
    text,
    tokenIds,
    finishReason: extension?.finish_reason ?? (final.finishReason === "length" ? "length" : "stop"),
    usage: {
      promptTokens,
      imageTokens: extension?.image_tokens ?? 0,
      completionTokens,
      totalTokens: usage?.total_tokens ?? promptTokens + completionTokens,
    },
    timings: timings
      ? {
          preprocessMs: timings.preprocess_ms,
          prefillMs: timings.prefill_ms,
          decodeMs: timings.decode_ms,
          totalMs: timings.total_ms,
          decodeTokensPerSecond: timings.decode_tokens_per_second,
        }
      : {
          preprocessMs: 0,
          prefillMs,
          decodeMs,
          totalMs: ended - started,
          decodeTokensPerSecond: decodeMs > 0 && completionTokens > 1 ? ((completionTokens - 1) * 1000) / decodeMs : 0,
        },
  };
}

type Generation = Omit<
  ReturnType<typeof GenerateCallOptionsSchema.parse>,
  "images" | "signal" | "timeoutMs" | "schema" | "choices" | "regex"
>;

// OpenAI's request for the SDK's call. Greedy decoding (the SDK's default) is asked for with temperature 0, which
// every OpenAI-compatible server takes as greedy.
function requestBody(
  model: string,
  messages: Messages,
  urls: string[],
  generation: Generation,
  structure: Structure | undefined,
): Record<string, unknown> {
  let picture = 0;
  const sample = generation.doSample === true;
  const body: Record<string, unknown> = {
    model,
    messages: messages.map((message) => {
      const parts = message.content.map((part) =>
        part.type === "text" ? { type: "text", text: part.text } : { type: "image_url", image_url: { url: urls[picture++] } },
      );
      const only = parts.length === 1 ? parts[0] : undefined;
      return { role: message.role, content: only?.type === "text" ? (only as { text: string }).text : parts };
    }),
    max_tokens: generation.maxNewTokens,
    temperature: sample ? (generation.temperature ?? 1) : 0,
    stream: true,
    stream_options: { include_usage: true },
  };
  if (sample && generation.topP !== undefined) body.top_p = generation.topP;
  if (sample && generation.topK !== undefined) body.top_k = generation.topK;
  if (generation.seed !== undefined) body.seed = generation.seed;
  if (generation.stopStrings !== undefined) body.stop = generation.stopStrings;
  if (generation.minNewTokens !== undefined) body.min_tokens = generation.minNewTokens;
  if (generation.repetitionPenalty !== undefined) body.repetition_penalty = generation.repetitionPenalty;
  // The JSON Schema the local model would constrain to (a zod schema converted the same way).
  if (structure) {
    body.response_format = {
      type: "json_schema",
      json_schema: { name: "answer", schema: JSON.parse(structure.grammar.source), strict: true },
    };
  }
  return body;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

import { z } from "zod";
import { describeExpected } from "../describe-expected.js";
import type { ContentPart, Message, Messages } from "../messages.js";
import type { GenerationOptions } from "../options.js";
import {
  MAX_STOP_STRING_LENGTH,
  MaxNewTokens,
  MIN_TEMPERATURE,
  MinNewTokens,
  RepetitionPenalty,
  Seed,
  StopStrings,
  TopK,
  TopP,
  WellFormedString,
} from "../protocol/option-ranges.js";
import { printable, printableExcerpt } from "../printable.js";
import type { StructureOptions } from "../structured-output.js";
import { ApiError } from "./api-error.js";
import { ResponseFormat, type ResponseSchema, responseSchema } from "./response-format.js";

// POST /v1/chat/completions as OpenAI documents it, turned into the SDK's messages and generation options. What the
// server cannot do (n > 1, tools, logprobs, penalties…) is refused with a 400 naming the parameter,
// never silently ignored; parameters that change nothing here (user, metadata…) are accepted.

/** A chat completion request, ready for the SDK. @internal */
export interface ChatRequest {
  /** The conversation; an image part's source is a `data:` URL or an `http(s)` URL still to be fetched. */
  messages: Messages;
  /** The generation options, and `schema` for a JSON `response_format`. */
  options: GenerationOptions & Pick<StructureOptions, "schema">;
  /** The JSON `response_format`'s schema and name; undefined for plain text. */
  responseSchema: ResponseSchema | undefined;
  stream: boolean;
  /** `stream_options.include_usage`: a last chunk with the usage. */
  includeUsage: boolean;
  /** The stop strings, which the answer's content leaves out (OpenAI's rule). */
  stop: string[];
}

// Accepted and without effect: they describe the caller, not the answer.
const IGNORED = new Set([
  "model",
  "user",
  "metadata",
  "store",
  "service_tier",
  "safety_identifier",
  "prompt_cache_key",
  "parallel_tool_calls",
]);

/** Parameters the server does not support, each with the values that mean "not used" and why it is refused. */
const UNSUPPORTED: Record<string, { unused: (value: unknown) => boolean; why: string }> = {
  n: { unused: (value) => value === 1, why: "Only one choice per request is supported (`n` must be 1): send several requests instead" },
  tools: { unused: isEmptyArray, why: "Tools and function calling are not supported" },
  tool_choice: { unused: (value) => value === "none" || value === "auto", why: "Tools and function calling are not supported" },
  functions: { unused: isEmptyArray, why: "Tools and function calling are not supported" },
  function_call: { unused: (value) => value === "none" || value === "auto", why: "Tools and function calling are not supported" },
  logprobs: { unused: (value) => value === false, why: "`logprobs` are not supported" },
  top_logprobs: { unused: (value) => value === 0, why: "`top_logprobs` are not supported" },
  frequency_penalty: { unused: (value) => value === 0, why: "`frequency_penalty` is not supported: use `repetition_penalty`" },
  presence_penalty: { unused: (value) => value === 0, why: "`presence_penalty` is not supported: use `repetition_penalty`" },
  logit_bias: { unused: (value) => isObject(value) && Object.keys(value).length === 0, why: "`logit_bias` is not supported" },
  modalities: {
    unused: (value) => Array.isArray(value) && value.every((entry) => entry === "text"),
    why: 'Only text answers are supported (`modalities: ["text"]`)',
  },
  audio: { unused: () => false, why: "Audio answers are not supported" },
  prediction: { unused: () => false, why: "Predicted outputs are not supported" },
  web_search_options: { unused: () => false, why: "Web search is not supported" },
  reasoning_effort: { unused: () => false, why: "`reasoning_effort` is not supported: the model does not reason" },
  verbosity: { unused: () => false, why: "`verbosity` is not supported" },
};

// What the server does, each parameter with the SDK's range (so a refusal names the OpenAI parameter). `top_k`,
// `min_tokens` and `repetition_penalty` are vLLM's extra parameters, which the same clients send.
const Parameters = z.object({
  messages: z.array(z.unknown()).min(1, "give at least one message"),
  max_tokens: MaxNewTokens.nullish(),
  max_completion_tokens: MaxNewTokens.nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: TopP.nullish(),
  stop: z.union([WellFormedString.min(1).max(MAX_STOP_STRING_LENGTH), StopStrings]).nullish(),
  seed: Seed.nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.strictObject({ include_usage: z.boolean().nullish(), include_obfuscation: z.boolean().nullish() }).nullish(),
  top_k: TopK.nullish(),
  min_tokens: MinNewTokens.nullish(),
  repetition_penalty: RepetitionPenalty.nullish(),
  response_format: ResponseFormat.nullish(),
});
const KNOWN = new Set(Object.keys(Parameters.shape));

/** Turns a parsed JSON body into the SDK's call; throws ApiError (400) naming what is wrong. @internal */
export function parseChatRequest(body: unknown, defaultMaxTokens: number): ChatRequest {
  if (!isObject(body)) throw new ApiError(400, "The request body must be a JSON object", { code: "invalid_request" });
  for (const [key, value] of Object.entries(body)) {
    if (value === null || value === undefined || IGNORED.has(key) || KNOWN.has(key)) continue;
    const unsupported = UNSUPPORTED[key];
    if (unsupported) {
      if (unsupported.unused(value)) continue;
      throw new ApiError(400, unsupported.why, { param: key, code: "unsupported_parameter" });
    }
    throw new ApiError(400, `Unrecognized request argument supplied: ${printableExcerpt(key, 40)}`, {
      param: printableExcerpt(key, 40),
      code: "unknown_parameter",
    });
  }
  const parsed = Parameters.safeParse(body, { error: describeExpected });
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const param = issue?.path.map(String).join(".") || null;
    throw new ApiError(400, `Invalid value for \`${param ?? "body"}\`: ${issue?.message ?? "not valid"}`, {
      param,
      code: "invalid_value",
    });
  }
  const request = parsed.data;
  const stop = typeof request.stop === "string" ? [request.stop] : (request.stop ?? []);
  const temperature = request.temperature ?? undefined;
  // Greedy decoding (the reference's) unless the request asks for sampling: a temperature above 0, or without a
  // temperature a top_p below 1 or a top_k.
  const doSample =
    temperature !== undefined ? temperature > 0 : (request.top_p ?? 1) < 1 || (request.top_k !== undefined && request.top_k !== null);
  const structured = responseSchema(request.response_format);
  const options: ChatRequest["options"] = withoutUndefined({
    maxNewTokens: request.max_completion_tokens ?? request.max_tokens ?? defaultMaxTokens,
    minNewTokens: request.min_tokens ?? undefined,
    // A temperature of 0 asks for greedy decoding explicitly; without one, the model's generation config decides.
    doSample: doSample ? true : temperature === 0 ? false : undefined,
    // OpenAI's temperature goes down to 0, the SDK's to 1e-4, which already samples as greedy decoding does.
    temperature: doSample && temperature !== undefined ? Math.max(temperature, MIN_TEMPERATURE) : undefined,
    topP: doSample ? (request.top_p ?? undefined) : undefined,
    topK: doSample ? (request.top_k ?? undefined) : undefined,
    repetitionPenalty: request.repetition_penalty ?? undefined,
    seed: request.seed ?? undefined,
    stopStrings: stop.length > 0 ? stop : undefined,
    schema: structured?.schema,
  });
  if (options.minNewTokens !== undefined && options.minNewTokens > (options.maxNewTokens ?? defaultMaxTokens)) {
    throw new ApiError(400, "`min_tokens` must be at most `max_tokens`", { param: "min_tokens", code: "invalid_value" });
  }
  // The SDK refuses it too (min_tokens can force tokens past the grammar's end); refused here under OpenAI's name.
  if (structured && (options.minNewTokens ?? 0) > 0) {
    throw new ApiError(400, "`min_tokens` cannot be combined with a JSON `response_format`: it could force tokens past the JSON's end", {
      param: "min_tokens",
      code: "invalid_value",
    });
  }
  return {
    messages: request.messages.map((message, index) => toMessage(message, `messages[${index}]`)),
    options,
    responseSchema: structured,
    stream: request.stream ?? false,
    includeUsage: request.stream_options?.include_usage ?? false,
    stop,
  };
}

const ROLES: Record<string, Message["role"]> = { system: "system", developer: "system", user: "user", assistant: "assistant" };

function toMessage(value: unknown, where: string): Message {
  if (!isObject(value)) throw invalid(where, "must be an object with `role` and `content`");
  const role = typeof value.role === "string" ? ROLES[value.role] : undefined;
  if (role === undefined) {
    if (value.role === "tool" || value.role === "function") {
      throw new ApiError(400, "Tool and function messages are not supported", { param: `${where}.role`, code: "unsupported_parameter" });
    }
    throw invalid(`${where}.role`, 'must be "system", "developer", "user" or "assistant"');
  }
  for (const key of ["tool_calls", "function_call", "audio"]) {
    if (value[key] !== undefined && value[key] !== null) {
      throw new ApiError(400, `\`${key}\` in messages is not supported`, { param: `${where}.${key}`, code: "unsupported_parameter" });
    }
  }
  const content = value.content;
  if (typeof content === "string") return { role, content: [text(content, `${where}.content`)] };
  if (!Array.isArray(content) || content.length === 0) throw invalid(`${where}.content`, "must be a string or a non-empty array of parts");
  return { role, content: content.map((part, index) => toPart(part, `${where}.content[${index}]`)) };
}

function toPart(value: unknown, where: string): ContentPart {
  if (!isObject(value)) throw invalid(where, "must be a content part object");
  if (value.type === "text") {
    if (typeof value.text !== "string") throw invalid(`${where}.text`, "must be a string");
    return text(value.text, `${where}.text`);
  }
  if (value.type === "image_url") {
    const image = value.image_url;
    const url = typeof image === "string" ? image : isObject(image) ? image.url : undefined;
    if (typeof url !== "string") throw invalid(`${where}.image_url.url`, "must be an http(s) or data: URL");
    return { type: "image", source: imageUrl(url, `${where}.image_url.url`) };
  }
  const type = typeof value.type === "string" ? printableExcerpt(value.type, 40) : String(value.type);
  throw new ApiError(400, `Content parts of type ${JSON.stringify(type)} are not supported: send "text" and "image_url" parts`, {
    param: `${where}.type`,
    code: "unsupported_parameter",
  });
}

// Only http(s) and data: URLs: a path or a file: URL would read the server's own files.
function imageUrl(url: string, where: string): string {
  if (/^data:/i.test(url)) return url;
  if (/^https?:\/\//i.test(url) && URL.canParse(url)) return url;
  throw invalid(where, `must be an http(s) or data: URL (got ${printable(JSON.stringify(printableExcerpt(url, 40)))})`);
}

function text(value: string, where: string): ContentPart {
  if (!WellFormedString.safeParse(value).success) throw invalid(where, "must be well-formed Unicode (it holds a lone surrogate)");
  return { type: "text", text: value };
}

function invalid(param: string, must: string): ApiError {
  return new ApiError(400, `Invalid value for \`${param}\`: ${must}`, { param, code: "invalid_value" });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function isEmptyArray(value: unknown): boolean {
  return Array.isArray(value) && value.length === 0;
}

function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, entry]) => entry !== undefined)) as T;
}

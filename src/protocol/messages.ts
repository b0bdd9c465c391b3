import { z } from "zod";
import { ErrorCode } from "../errors.js";
import {
  AttnImplementation,
  ComputeDtype,
  Decoder,
  DeviceMap,
  Int8Threshold,
  LongestEdge,
  MaxBatchSize,
  MaxMemory,
  MaxNewTokens,
  MinNewTokens,
  ModelId,
  NoRepeatNgramSize,
  NumBeams,
  QuantizationMode,
  QuantType,
  RepetitionPenalty,
  Revision,
  Seed,
  SkipModules,
  StopStrings,
  Temperature,
  TopK,
  TopP,
  TorchDtype,
  WellFormedString,
} from "./option-ranges.js";

// Wire shapes of docs/PROTOCOL.md. Everything the worker sends is parsed with these before use.

export const PROTOCOL_VERSION = 1;

export const WorkerVersions = z.object({
  python: z.string(),
  torch: z.string().nullable(),
  transformers: z.string().nullable(),
  bitsandbytes: z.string().nullable().optional(),
  accelerate: z.string().nullable().optional(),
  pillow: z.string().nullable().optional(),
});
export type WorkerVersions = z.infer<typeof WorkerVersions>;

export const ReadyFrame = z.object({
  type: z.literal("ready"),
  protocol: z.number().int(),
  pid: z.number().int(),
  versions: WorkerVersions.partial().passthrough(),
});

export const TokenEventData = z.object({ text: z.string(), tokenIds: z.array(z.number().int()) });
export type TokenEventData = z.infer<typeof TokenEventData>;

/**
 * A load's step (`stage`, `message`) or, with `done` and `unit`, a count of its work: `done` of `total` (when known)
 * bytes (a hub download) or items (the weights placed).
 */
export const ProgressEventData = z.object({
  stage: z.string(),
  message: z.string(),
  done: z.number().nonnegative().optional(),
  total: z.number().nonnegative().optional(),
  unit: z.enum(["bytes", "items"]).optional(),
});
export type ProgressEventData = z.infer<typeof ProgressEventData>;

export const EventFrame = z.discriminatedUnion("event", [
  z.object({ type: z.literal("event"), id: z.number().int(), event: z.literal("token"), data: TokenEventData }),
  z.object({ type: z.literal("event"), id: z.number().int(), event: z.literal("progress"), data: ProgressEventData }),
]);
export type EventFrame = z.infer<typeof EventFrame>;

export const ResultFrame = z.object({ type: z.literal("result"), id: z.number().int(), result: z.unknown() });

export const WorkerErrorPayload = z.object({
  code: z.string(),
  message: z.string(),
  fix: z.string().nullish(),
  pythonType: z.string().nullish(),
  traceback: z.string().nullish(),
});
export type WorkerErrorPayload = z.infer<typeof WorkerErrorPayload>;

export const ErrorFrame = z.object({ type: z.literal("error"), id: z.number().int().nullable(), error: WorkerErrorPayload });

export const InboundFrame = z.union([ReadyFrame, EventFrame, ResultFrame, ErrorFrame]);
export type InboundFrame = z.infer<typeof InboundFrame>;

export const knownErrorCode = (code: string): ErrorCode => {
  const parsed = ErrorCode.safeParse(code);
  return parsed.success ? parsed.data : "GENERATION_FAILED";
};

// Requests: each method binds its params to its result schema, so `request("load", ...)` is typed end to end.
// The params schemas are what the worker accepts, exactly (docs/wire-schema.json is generated from them): a key with
// a default may be left out and then means that default (the SDK always sends every key); `null` leaves the choice
// to transformers or the model's config.

export const QuantizationParams = z.strictObject({
  mode: QuantizationMode.default("none"),
  quantType: QuantType.nullable().default(null),
  doubleQuant: z.boolean().nullable().default(null),
  computeDtype: ComputeDtype.nullable().default(null),
  skipModules: SkipModules.nullable().default(null),
  int8Threshold: Int8Threshold.nullable().default(null),
});
export type QuantizationParams = z.infer<typeof QuantizationParams>;

const noQuantization: QuantizationParams = {
  mode: "none",
  quantType: null,
  doubleQuant: null,
  computeDtype: null,
  skipModules: null,
  int8Threshold: null,
};

export const LoadParams = z
  .strictObject({
    model: ModelId,
    revision: Revision.nullable().default(null),
    quantization: QuantizationParams.default(noQuantization),
    deviceMap: DeviceMap.default("auto"),
    dtype: TorchDtype.default("auto"),
    attnImplementation: AttnImplementation.nullable().default(null),
    doImageSplitting: z.boolean().nullable().default(null),
    longestEdge: LongestEdge.nullable().default(null),
    trustRemoteCode: z.boolean().default(false),
    localFilesOnly: z.boolean().default(false),
    decoder: Decoder.default("auto"),
    maxBatchSize: MaxBatchSize.default(8),
    /** from_pretrained's `max_memory`, by device (accelerate's format); only with deviceMap "auto". */
    maxMemory: MaxMemory.nullable().default(null),
    /** The fast decoder computes each request's tokens independently of what shares its batch (batch-invariant kernels). */
    deterministic: z.boolean().default(false),
  })
  .describe(
    "The worker also requires model, revision and quantization.skipModules to be well-formed Unicode: no lone surrogate (else INVALID_OPTIONS), maxMemory only with deviceMap 'auto', and every CUDA index in maxMemory to be a device torch sees (else CUDA_UNAVAILABLE).",
  );
export type LoadParams = z.infer<typeof LoadParams>;

export const MemoryUse = z.object({
  /** Bytes of the model's weights and buffers (transformers' `get_memory_footprint()`). */
  footprintBytes: z.number().int(),
  /** Bytes torch has allocated on the current CUDA device (weights, caches, workspace); absent without CUDA. */
  cudaAllocatedBytes: z.number().int().optional(),
  /** Bytes of the fast decoder's KV cache: 0 with the reference decoder, and after `releaseMemory()` until the next request. */
  kvCacheBytes: z.number().int(),
});
export type MemoryUse = z.infer<typeof MemoryUse>;

export const LoadResult = z
  .object({
    model: z.string(),
    device: z.string(),
    dtype: z.string(),
    quantization: QuantizationMode,
    /** The load's quantization params as the worker applied them. */
    quantizationConfig: QuantizationParams.optional(),
    loadMs: z.number(),
    parameters: z.number().int().optional(),
    imageSeqLen: z.number().int().optional(),
    doImageSplitting: z.boolean().optional(),
    longestEdge: z.number().int().nullable().optional(),
    maxContext: z.number().int().nullable().optional(),
    imageTokenId: z.number().int().optional(),
    eosTokenIds: z.array(z.number().int()).optional(),
    /** The decoder in use: `fast` (batched, CUDA graphs on GPU) or `reference` (generate()). */
    decoder: z.enum(["fast", "reference"]).optional(),
    maxBatchSize: z.number().int().optional(),
    /** Memory when the load finished; `workerInfo()` reports it as it is now. */
    memory: MemoryUse.optional(),
  })
  .passthrough();
export type LoadResult = z.infer<typeof LoadResult>;

export const WireImagePart = z.strictObject({ type: z.literal("image") });
export const WireTextPart = z
  .strictObject({ type: z.literal("text"), text: WellFormedString })
  .describe("The worker also requires the text to be well-formed Unicode: no lone surrogate (else INVALID_MESSAGES).");

export const WireMessage = z.strictObject({
  role: z.enum(["user", "assistant", "system"]),
  content: z.array(z.union([WireImagePart, WireTextPart])).min(1),
});
export type WireMessage = z.infer<typeof WireMessage>;

export const WireImage = z
  .strictObject({
    offset: z.number().int().min(0),
    length: z.number().int().min(0),
    width: z.number().int().min(1),
    height: z.number().int().min(1),
  })
  .describe(
    "Raw RGB pixels at payload[offset : offset + length]; the worker also requires length = width * height * 3 and the bytes inside the payload (else IMAGE_UNREADABLE).",
  );
export type WireImage = z.infer<typeof WireImage>;

/** The longest grammar source the worker compiles (a JSON Schema as JSON text, or a regular expression). */
export const MAX_GRAMMAR_SOURCE = 100_000;

export const WireGrammar = z
  .strictObject({
    /** `json_schema`: `source` is a JSON Schema as JSON text; `regex`: the whole answer matches `source`. */
    type: z.enum(["json_schema", "regex"]),
    source: WellFormedString.min(1).max(MAX_GRAMMAR_SOURCE),
  })
  .describe(
    "Structured output: the answer is constrained token by token (llguidance). A source the engine cannot compile is refused with INVALID_OPTIONS naming the construct, when the request runs.",
  );
export type WireGrammar = z.infer<typeof WireGrammar>;

export const WireGenerationOptions = z
  .strictObject({
    maxNewTokens: MaxNewTokens,
    minNewTokens: MinNewTokens.nullable().default(null),
    doSample: z.boolean().nullable().default(null),
    temperature: Temperature.nullable().default(null),
    topP: TopP.nullable().default(null),
    topK: TopK.nullable().default(null),
    repetitionPenalty: RepetitionPenalty.nullable().default(null),
    noRepeatNgramSize: NoRepeatNgramSize.nullable().default(null),
    numBeams: NumBeams.nullable().default(null),
    seed: Seed.nullable().default(null),
    stopStrings: StopStrings.nullable().default(null),
    grammar: WireGrammar.nullable().default(null),
  })
  .describe(
    "transformers generate() options; null ones are left out so the model's generation config decides. The worker also requires minNewTokens <= maxNewTokens, and stop strings that are well-formed Unicode: no lone surrogate.",
  );
export type WireGenerationOptions = z.infer<typeof WireGenerationOptions>;

export const GenerateParams = z
  .strictObject({
    messages: z.array(WireMessage).min(1),
    images: z.array(WireImage).default([]),
    options: WireGenerationOptions,
    stream: z.boolean().default(false),
    /** A chat session's turn: refuse with CONTEXT_OVERFLOW unless the prompt and up to maxNewTokens new tokens fit. */
    reserveNewTokens: z.boolean().default(false),
  })
  .describe("The worker also requires as many images as {type: 'image'} parts (else INVALID_MESSAGES).");
export type GenerateParams = z.infer<typeof GenerateParams>;

/**
 * Why the answer ended: EOS (`stop`), `maxNewTokens` (`length`), a stop string (`stop_string`), or `maxNewTokens`
 * before a structured answer's grammar was complete (`incomplete_structure`: generate() then rejects).
 */
export const FinishReason = z.enum(["stop", "length", "stop_string", "incomplete_structure"]);
export type FinishReason = z.infer<typeof FinishReason>;

export const Usage = z.object({
  promptTokens: z.number().int(),
  imageTokens: z.number().int(),
  completionTokens: z.number().int(),
  totalTokens: z.number().int(),
});
export type Usage = z.infer<typeof Usage>;

export const Timings = z.object({
  preprocessMs: z.number(),
  prefillMs: z.number(),
  decodeMs: z.number(),
  totalMs: z.number(),
  decodeTokensPerSecond: z.number(),
});
export type Timings = z.infer<typeof Timings>;

export const GenerateResult = z.object({
  text: z.string(),
  tokenIds: z.array(z.number().int()),
  finishReason: FinishReason,
  usage: Usage,
  timings: Timings,
});
export type GenerateResult = z.infer<typeof GenerateResult>;

export const InfoResult = z
  .object({
    versions: WorkerVersions.partial().passthrough(),
    /** The loaded model, with its memory as it is now. */
    model: LoadResult.optional(),
  })
  .passthrough();
export type InfoResult = z.infer<typeof InfoResult>;

export const ReleaseMemoryResult = z.object({
  /** KV-cache bytes given back by this call. */
  freedKvCacheBytes: z.number().int(),
  /** Memory after the release. */
  memory: MemoryUse,
});
export type ReleaseMemoryResult = z.infer<typeof ReleaseMemoryResult>;

/** Params of the methods that take none (the worker ignores any it is sent). */
export const NoParams = z.object({});
export const PingResult = z.object({ pong: z.literal(true) });

export const methods = {
  ping: { params: NoParams, result: PingResult },
  load: { params: LoadParams, result: LoadResult },
  generate: { params: GenerateParams, result: GenerateResult },
  info: { params: NoParams, result: InfoResult },
  releaseMemory: { params: NoParams, result: ReleaseMemoryResult },
} as const;
export type MethodName = keyof typeof methods;
export type ParamsOf<M extends MethodName> = z.infer<(typeof methods)[M]["params"]>;
export type ResultOf<M extends MethodName> = z.infer<(typeof methods)[M]["result"]>;

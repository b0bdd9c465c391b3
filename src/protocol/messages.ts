import { z } from "zod";
import { ErrorCode } from "../errors.js";

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

export const ProgressEventData = z.object({ stage: z.string(), message: z.string() });
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

export const QuantizationParams = z.object({
  mode: z.enum(["none", "8bit", "4bit"]),
  quantType: z.enum(["nf4", "fp4"]).nullable(),
  doubleQuant: z.boolean().nullable(),
  computeDtype: z.enum(["float32", "bfloat16", "float16"]).nullable(),
  skipModules: z.array(z.string()).nullable(),
  int8Threshold: z.number().nullable(),
});

export const LoadParams = z.object({
  model: z.string(),
  revision: z.string().nullable(),
  quantization: QuantizationParams,
  deviceMap: z.string(),
  dtype: z.enum(["auto", "float32", "bfloat16", "float16"]),
  attnImplementation: z.enum(["eager", "sdpa", "flash_attention_2"]).nullable(),
  doImageSplitting: z.boolean().nullable(),
  longestEdge: z.number().int().nullable(),
  trustRemoteCode: z.boolean(),
  localFilesOnly: z.boolean(),
  decoder: z.enum(["auto", "fast", "reference"]),
  maxBatchSize: z.number().int(),
});
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
    quantization: z.string(),
    loadMs: z.number(),
    parameters: z.number().optional(),
    imageSeqLen: z.number().int().optional(),
    doImageSplitting: z.boolean().optional(),
    longestEdge: z.number().nullable().optional(),
    maxContext: z.number().nullable().optional(),
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

export const WireMessage = z.object({
  role: z.enum(["user", "assistant", "system"]),
  content: z.array(z.union([z.object({ type: z.literal("image") }), z.object({ type: z.literal("text"), text: z.string() })])),
});
export type WireMessage = z.infer<typeof WireMessage>;

export const WireImage = z.object({
  offset: z.number().int(),
  length: z.number().int(),
  width: z.number().int(),
  height: z.number().int(),
});
export type WireImage = z.infer<typeof WireImage>;

export const WireGenerationOptions = z.object({
  maxNewTokens: z.number().int(),
  minNewTokens: z.number().int().nullable(),
  doSample: z.boolean().nullable(),
  temperature: z.number().nullable(),
  topP: z.number().nullable(),
  topK: z.number().int().nullable(),
  repetitionPenalty: z.number().nullable(),
  noRepeatNgramSize: z.number().int().nullable(),
  numBeams: z.number().int().nullable(),
  seed: z.number().int().nullable(),
  stopStrings: z.array(z.string()).nullable(),
});
export type WireGenerationOptions = z.infer<typeof WireGenerationOptions>;

export const GenerateParams = z.object({
  messages: z.array(WireMessage),
  images: z.array(WireImage),
  options: WireGenerationOptions,
  stream: z.boolean(),
});
export type GenerateParams = z.infer<typeof GenerateParams>;

export const FinishReason = z.enum(["stop", "length", "stop_string"]);
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

export const methods = {
  ping: { params: z.object({}), result: z.object({ pong: z.literal(true) }) },
  load: { params: LoadParams, result: LoadResult },
  generate: { params: GenerateParams, result: GenerateResult },
  info: { params: z.object({}), result: InfoResult },
  releaseMemory: { params: z.object({}), result: ReleaseMemoryResult },
} as const;
export type MethodName = keyof typeof methods;
export type ParamsOf<M extends MethodName> = z.infer<(typeof methods)[M]["params"]>;
export type ResultOf<M extends MethodName> = z.infer<(typeof methods)[M]["result"]>;

import { z } from "zod";
import { embeddedModelPath } from "./embedded-model.js";
import {
  AttnImplementation,
  ComputeDtype,
  Decoder,
  DeviceMap,
  Int8Threshold,
  LongestEdge,
  MaxBatchSize,
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
} from "./protocol/option-ranges.js";

// Load and generation options. Unknown keys are refused so a typo never silently does nothing. Every option that
// reaches the worker takes its range from protocol/option-ranges.ts, which the wire schemas share.

export { DeviceMap, QuantizationMode, TorchDtype } from "./protocol/option-ranges.js";

export const QuantizationOptions = z.strictObject({
  mode: QuantizationMode,
  /** 4-bit data type (bitsandbytes `bnb_4bit_quant_type`). */
  quantType: QuantType.optional(),
  /** 4-bit: quantize the quantization constants too (`bnb_4bit_use_double_quant`). */
  doubleQuant: z.boolean().optional(),
  /** 4-bit: dtype of the matrix products (`bnb_4bit_compute_dtype`). */
  computeDtype: ComputeDtype.optional(),
  /** Modules left unquantized (`llm_int8_skip_modules`); bitsandbytes' default leaves only `lm_head`. */
  skipModules: SkipModules.optional(),
  /** 8-bit: outlier threshold of LLM.int8 (`llm_int8_threshold`). */
  int8Threshold: Int8Threshold.optional(),
});
export type QuantizationOptions = z.infer<typeof QuantizationOptions>;

export const ImageLimits = z.strictObject({
  /** Largest encoded image accepted, in bytes. */
  maxBytes: z.number().int().positive().optional(),
  /** Largest decoded image accepted, in pixels (checked before decoding). */
  maxPixels: z.number().int().positive().optional(),
  /** Downscale images whose longest side exceeds this; off by default because it changes the pixels the model sees. */
  maxEdge: z.number().int().positive().optional(),
  /** Time allowed to fetch an image URL. */
  fetchTimeoutMs: z.number().int().positive().optional(),
  /** Redirects followed when fetching an image URL. */
  maxRedirects: z.number().int().nonnegative().optional(),
});
export type ImageLimits = z.infer<typeof ImageLimits>;

export const LoadOptions = z.strictObject({
  /** A local folder in save_pretrained layout, or a hub id such as `HuggingFaceM4/idefics2-8b`. Defaults to the embedded tiny model. */
  model: ModelId.default(embeddedModelPath),
  revision: Revision.optional(),
  quantization: z.union([QuantizationMode, QuantizationOptions]).default("none"),
  deviceMap: DeviceMap.default("auto"),
  dtype: TorchDtype.default("auto"),
  attnImplementation: AttnImplementation.optional(),
  /** Split each image into 4 crops plus the whole (5× the image tokens); the processor's setting when left out. */
  imageSplitting: z.boolean().optional(),
  /** The image processor's longest edge; the processor's setting when left out. */
  longestEdge: LongestEdge.optional(),
  /** Run code shipped with the model. Off unless you trust the model's source. */
  trustRemoteCode: z.boolean().default(false),
  localFilesOnly: z.boolean().default(false),
  /** A Python interpreter to use as it is (bring your own, e.g. one with CUDA torch). Else IDEFICS2_PYTHON, else the managed environment. */
  python: z.string().min(1).optional(),
  /** Where the managed environment lives; else IDEFICS2_HOME, else the per-user cache folder. */
  home: z.string().min(1).optional(),
  images: ImageLimits.default({}),
  /** How long the worker may take to start (Python imports torch first). */
  startupTimeoutMs: z.number().int().positive().default(180_000),
  /** After the worker dies, the next call starts a new one and loads the model again. */
  restartOnCrash: z.boolean().default(true),
  /**
   * How tokens are decoded. `fast`: a preallocated KV cache per request, requests batched together as they
   * arrive, and on CUDA a captured CUDA graph per step. `reference`: transformers' generate(), one request at
   * a time. `auto` (default): `fast` when the model sits on one CUDA device, else `reference`. Beam search,
   * stop strings and requests longer than the model's sliding window always use generate().
   */
  decoder: Decoder.default("auto"),
  /** Most requests the fast decoder runs in one batch; more wait in the queue. */
  maxBatchSize: MaxBatchSize.default(8),
  /** Generations queued or running at once; one more is rejected with QueueFullError instead of growing memory. */
  maxQueue: z.number().int().positive().max(100_000).default(256),
});
export type LoadOptions = z.input<typeof LoadOptions>;
export type ResolvedLoadOptions = z.output<typeof LoadOptions>;

export const GenerationOptions = z.strictObject({
  maxNewTokens: MaxNewTokens.default(500),
  /** At most `maxNewTokens`; the worker compares the two. */
  minNewTokens: MinNewTokens.optional(),
  /** Sample instead of greedy decoding. Greedy is what the reference does. */
  doSample: z.boolean().optional(),
  temperature: Temperature.optional(),
  topP: TopP.optional(),
  topK: TopK.optional(),
  repetitionPenalty: RepetitionPenalty.optional(),
  noRepeatNgramSize: NoRepeatNgramSize.optional(),
  numBeams: NumBeams.optional(),
  /** Seeds torch before generating, for reproducible sampling. */
  seed: Seed.optional(),
  /** Stop when the text ends with one of these. */
  stopStrings: StopStrings.optional(),
});
export type GenerationOptions = z.input<typeof GenerationOptions>;
export type ResolvedGenerationOptions = z.output<typeof GenerationOptions>;

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
// Each shape is a const of its own that the schema's type names: declaration emit drops the doc comments from the
// mapped type z.strictObject() returns, so the published .d.ts would otherwise show no documentation on hover.

export { DeviceMap, QuantizationMode, TorchDtype } from "./protocol/option-ranges.js";

const quantizationShape = {
  /** `"none"`, `"8bit"` (LLM.int8) or `"4bit"`; the other fields tune that mode and are bitsandbytes' defaults when left out. */
  mode: QuantizationMode,
  /** 4-bit data type (bitsandbytes `bnb_4bit_quant_type`): `"nf4"` or `"fp4"` (default, the blog's). */
  quantType: QuantType.optional(),
  /** 4-bit: quantize the quantization constants too (`bnb_4bit_use_double_quant`). */
  doubleQuant: z.boolean().optional(),
  /** 4-bit: dtype of the matrix products (`bnb_4bit_compute_dtype`). */
  computeDtype: ComputeDtype.optional(),
  /** Modules left unquantized (`llm_int8_skip_modules`); bitsandbytes' default leaves only `lm_head`. */
  skipModules: SkipModules.optional(),
  /** 8-bit: outlier threshold of LLM.int8 (`llm_int8_threshold`), at least 0; bitsandbytes' default is 6. */
  int8Threshold: Int8Threshold.optional(),
};
export const QuantizationOptions: z.ZodObject<typeof quantizationShape, z.core.$strict> = z.strictObject(quantizationShape);
export type QuantizationOptions = z.infer<typeof QuantizationOptions>;

const imageLimitsShape = {
  /** Largest encoded image accepted (file, bytes or download), in bytes. Default 64 MiB. */
  maxBytes: z.number().int().positive().optional(),
  /** Largest decoded image accepted, in pixels, checked from the header before decoding. Default 100 megapixels. */
  maxPixels: z.number().int().positive().optional(),
  /** Downscale images whose longest side exceeds this; off by default because it changes the pixels the model sees. */
  maxEdge: z.number().int().positive().optional(),
  /** Time allowed to fetch an image URL, in milliseconds. Default 30000. */
  fetchTimeoutMs: z.number().int().positive().optional(),
  /** Redirects followed when fetching an http(s) image URL. Default 5. */
  maxRedirects: z.number().int().nonnegative().optional(),
};
export const ImageLimits: z.ZodObject<typeof imageLimitsShape, z.core.$strict> = z.strictObject(imageLimitsShape);
export type ImageLimits = z.infer<typeof ImageLimits>;

const loadShape = {
  /** A local folder in save_pretrained layout, or a hub id such as `HuggingFaceM4/idefics2-8b`. Defaults to the embedded tiny model. */
  model: ModelId.default(embeddedModelPath),
  /** Hub revision to load: a branch, tag or commit. The default branch when left out. */
  revision: Revision.optional(),
  /**
   * bitsandbytes quantization: `"none"` (default), `"8bit"` or `"4bit"` (the blog's `BitsAndBytesConfig(load_in_8bit=True)`
   * / `(load_in_4bit=True)`, so 4-bit is fp4), or `{ mode, quantType, doubleQuant, ... }` for every setting. Needs bitsandbytes.
   */
  quantization: z.union([QuantizationMode, QuantizationOptions]).default("none"),
  /** Where the model goes: `"auto"` (default: accelerate places it), `"cpu"`, `"cuda"` (the current CUDA device) or `"cuda:N"`. */
  deviceMap: DeviceMap.default("auto"),
  /** Weight dtype: `"auto"` (default: the checkpoint's), `"float32"`, `"bfloat16"` or `"float16"`. */
  dtype: TorchDtype.default("auto"),
  /**
   * transformers' `attn_implementation`: `"eager"`, `"sdpa"`, `"flash_attention_2"`, `"flash_attention_3"`, `"flash_attention_4"`
   * or `"flex_attention"` (the flash ones need their packages). transformers chooses when left out.
   */
  attnImplementation: AttnImplementation.optional(),
  /** Split each image into 4 crops plus the whole (5× the image tokens); the processor's setting when left out. */
  imageSplitting: z.boolean().optional(),
  /** Resize images so their longest edge is at most this many pixels (1–65,536); the processor's setting when left out. */
  longestEdge: LongestEdge.optional(),
  /** Run code shipped with the model; weights still load from safetensors only. Default false: leave it off unless you trust the source. */
  trustRemoteCode: z.boolean().default(false),
  /** Never contact the Hugging Face hub: load only what is on disk or in the hub cache. Default false. */
  localFilesOnly: z.boolean().default(false),
  /** A Python interpreter to use as it is (bring your own, e.g. one with CUDA torch). Else IDEFICS2_PYTHON, else the managed environment. */
  python: z.string().min(1).optional(),
  /** Where the managed environment lives; else IDEFICS2_HOME, else the per-user cache folder. */
  home: z.string().min(1).optional(),
  /** Limits on the pictures generate() accepts: `{ maxBytes, maxPixels, maxEdge, fetchTimeoutMs, maxRedirects }`. */
  images: ImageLimits.default({}),
  /** How long the worker may take to start, in milliseconds (Python imports torch first). Default 180000. */
  startupTimeoutMs: z.number().int().positive().default(180_000),
  /** After the worker dies (killed, out of memory), the next call starts a new one and loads the model again. Default true. */
  restartOnCrash: z.boolean().default(true),
  /**
   * How tokens are decoded. `fast`: a preallocated KV cache per request, requests batched together as they
   * arrive, and on CUDA a captured CUDA graph per step. `reference`: transformers' generate(), one request at
   * a time. `auto` (default): `fast` when the model sits on one CUDA device, else `reference`. Beam search,
   * stop strings and requests longer than the model's sliding window always use generate().
   */
  decoder: Decoder.default("auto"),
  /** Most requests the fast decoder runs in one batch (1–64, default 8); more wait in the queue. */
  maxBatchSize: MaxBatchSize.default(8),
  /** Generations queued or running at once (default 256); one more is rejected with QueueFullError instead of growing memory. */
  maxQueue: z.number().int().positive().max(100_000).default(256),
};
export const LoadOptions: z.ZodObject<typeof loadShape, z.core.$strict> = z.strictObject(loadShape);
export type LoadOptions = z.input<typeof LoadOptions>;
export type ResolvedLoadOptions = z.output<typeof LoadOptions>;

// Generation options left out take the model's generation config, as transformers' generate() does.
const generationShape = {
  /** Most tokens to generate (1–1,000,000). Default 500, as the blog asks. */
  maxNewTokens: MaxNewTokens.default(500),
  /** Fewest tokens to generate before the end of the answer may come (0–1,000,000, at most `maxNewTokens`). */
  minNewTokens: MinNewTokens.optional(),
  /** Sample instead of greedy decoding; greedy (the default) is what the reference does. */
  doSample: z.boolean().optional(),
  /** Sampling temperature, above 0 and at most 100; only with `doSample`. */
  temperature: Temperature.optional(),
  /** Nucleus sampling: keep the most likely tokens whose probabilities add up to this (above 0, at most 1). */
  topP: TopP.optional(),
  /** Sample only among the `topK` most likely tokens; 0 turns top-k filtering off. */
  topK: TopK.optional(),
  /** Penalty on tokens already in the text, above 0 and at most 100; 1 is none, above 1 discourages repeats. */
  repetitionPenalty: RepetitionPenalty.optional(),
  /** Never repeat an n-gram of this size; 0 turns it off. */
  noRepeatNgramSize: NoRepeatNgramSize.optional(),
  /** Beam search with this many beams (1–64, default 1); a stream then gets its text at the end. */
  numBeams: NumBeams.optional(),
  /** Seeds torch before generating, for reproducible sampling (0 to 2^53 − 1). */
  seed: Seed.optional(),
  /** Stop when the text ends with one of these (1–64 non-empty strings); finishReason is then `stop_string`. */
  stopStrings: StopStrings.optional(),
};
export const GenerationOptions: z.ZodObject<typeof generationShape, z.core.$strict> = z.strictObject(generationShape);
export type GenerationOptions = z.input<typeof GenerationOptions>;
export type ResolvedGenerationOptions = z.output<typeof GenerationOptions>;

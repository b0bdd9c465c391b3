import { z } from "zod";
import { embeddedModelPath } from "./embedded-model.js";

// Load and generation options. Unknown keys are refused so a typo never silently does nothing.

export const QuantizationMode = z.enum(["none", "8bit", "4bit"]);
export type QuantizationMode = z.infer<typeof QuantizationMode>;

export const TorchDtype = z.enum(["auto", "float32", "bfloat16", "float16"]);
export type TorchDtype = z.infer<typeof TorchDtype>;

export const QuantizationOptions = z.strictObject({
  mode: QuantizationMode,
  /** 4-bit data type (bitsandbytes `bnb_4bit_quant_type`). */
  quantType: z.enum(["nf4", "fp4"]).optional(),
  /** 4-bit: quantize the quantization constants too (`bnb_4bit_use_double_quant`). */
  doubleQuant: z.boolean().optional(),
  /** 4-bit: dtype of the matrix products (`bnb_4bit_compute_dtype`). */
  computeDtype: TorchDtype.exclude(["auto"]).optional(),
  /** Modules left unquantized (`llm_int8_skip_modules`); bitsandbytes' default leaves only `lm_head`. */
  skipModules: z.array(z.string().min(1)).optional(),
  /** 8-bit: outlier threshold of LLM.int8 (`llm_int8_threshold`). */
  int8Threshold: z.number().finite().nonnegative().optional(),
});
export type QuantizationOptions = z.infer<typeof QuantizationOptions>;

export const DeviceMap = z.union([z.enum(["auto", "cpu", "cuda"]), z.string().regex(/^cuda:\d+$/, "expected auto, cpu, cuda or cuda:N")]);
export type DeviceMap = z.infer<typeof DeviceMap>;

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
  model: z.string().min(1).default(embeddedModelPath),
  revision: z.string().min(1).optional(),
  quantization: z.union([QuantizationMode, QuantizationOptions]).default("none"),
  deviceMap: DeviceMap.default("auto"),
  dtype: TorchDtype.default("auto"),
  attnImplementation: z.enum(["eager", "sdpa", "flash_attention_2"]).optional(),
  /** Split each image into 4 crops plus the whole (5× the image tokens); the processor's setting when left out. */
  imageSplitting: z.boolean().optional(),
  /** The image processor's longest edge; the processor's setting when left out. */
  longestEdge: z.number().int().positive().optional(),
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
  decoder: z.enum(["auto", "fast", "reference"]).default("auto"),
  /** Most requests the fast decoder runs in one batch; more wait in the queue. */
  maxBatchSize: z.number().int().min(1).max(64).default(8),
  /** Generations queued or running at once; one more is rejected with QueueFullError instead of growing memory. */
  maxQueue: z.number().int().positive().max(100_000).default(256),
});
export type LoadOptions = z.input<typeof LoadOptions>;
export type ResolvedLoadOptions = z.output<typeof LoadOptions>;

export const GenerationOptions = z.strictObject({
  maxNewTokens: z.number().int().positive().max(1_000_000).default(500),
  minNewTokens: z.number().int().nonnegative().optional(),
  /** Sample instead of greedy decoding. Greedy is what the reference does. */
  doSample: z.boolean().optional(),
  temperature: z.number().finite().positive().max(100).optional(),
  topP: z.number().finite().gt(0).max(1).optional(),
  topK: z.number().int().nonnegative().optional(),
  repetitionPenalty: z.number().finite().positive().max(100).optional(),
  noRepeatNgramSize: z.number().int().nonnegative().optional(),
  numBeams: z.number().int().positive().max(64).optional(),
  /** Seeds torch before generating, for reproducible sampling. */
  seed: z.number().int().nonnegative().max(2 ** 32 - 1).optional(),
  /** Stop when the text ends with one of these. */
  stopStrings: z.array(z.string().min(1)).max(64).optional(),
});
export type GenerationOptions = z.input<typeof GenerationOptions>;
export type ResolvedGenerationOptions = z.output<typeof GenerationOptions>;

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
  MaxMemory,
  MaxNewTokens,
  MinNewTokens,
  ModelId,
  NoRepeatNgramSize,
  NumBeams,
  QuantizationMode,
  QuantType,
  ReplicaDevice,
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
} from "./protocol/option-ranges.js";

// Load and generation options. Unknown keys are refused so a typo never silently does nothing. Every option that
// reaches the worker takes its range from protocol/option-ranges.ts, which the wire schemas share.
// Each shape is a const of its own that the schema's type names: declaration emit drops the doc comments from the
// mapped type z.strictObject() returns, so the published .d.ts would otherwise show no documentation on hover.

export { DeviceMap, MaxMemory, QuantizationMode, ReplicaDevice, TorchDtype } from "./protocol/option-ranges.js";

/** The most workers `devices` may start. @internal */
export const MAX_REPLICAS = 64;

/** The longest delay Node's timers hold (2^31 − 1 ms, about 24.8 days): a longer one fires at once. @internal */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** A time limit in milliseconds: a positive integer Node's timers hold. @internal */
export const TimerMs = z.number().int().min(1).max(MAX_TIMER_MS);

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
  /** Time allowed to fetch an image URL (lookups, redirects, headers and body), in milliseconds (at most 2^31 − 1). Default 30000. */
  fetchTimeoutMs: TimerMs.optional(),
  /** Time allowed to read an image file, in milliseconds (at most 2^31 − 1). Default 30000. Only regular files are read at all. */
  readTimeoutMs: TimerMs.optional(),
  /** Redirects followed when fetching an http(s) image URL. Default 5. */
  maxRedirects: z.number().int().nonnegative().optional(),
  /**
   * Refuse image URLs whose host is or resolves to a loopback, private, link-local (cloud metadata), unique-local or
   * other non-public address, checked at every redirect and connection (IMAGE_URL_REFUSED). Default false: the
   * library fetches what its caller asks for. Turn it on wherever URLs come from someone else (a server).
   */
  blockPrivateNetwork: z.boolean().optional(),
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
  /**
   * One worker per entry, each holding the whole model on its device: `["cuda:0", "cuda:1"]`, or `"all"` (every CUDA
   * device torch sees). Each call goes to the worker with the fewest calls in flight; a crashed one is replaced while
   * the others serve. `"cpu"` may repeat (two workers on the CPU). Not with a `deviceMap` other than `"auto"`. One
   * worker, placed by `deviceMap`, when left out.
   */
  devices: z.union([z.literal("all"), z.array(ReplicaDevice).min(1).max(MAX_REPLICAS)]).optional(),
  /**
   * The most memory `deviceMap: "auto"` may give the model on each device (from_pretrained's `max_memory`, accelerate's
   * format): `{ "0": "10GiB", "1": "10GiB", "cpu": "30GiB" }`, keys CUDA indexes or `"cpu"`, values bytes or a number
   * with GiB, MiB, KiB, GB, MB or KB. With limits below the model's size on each GPU, one model is split over several.
   * Only with `deviceMap: "auto"`; accelerate's own limits (most of each device) when left out.
   */
  maxMemory: MaxMemory.optional(),
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
  python: WellFormedString.min(1).optional(),
  /** Where the managed environment lives; else IDEFICS2_HOME, else the per-user cache folder. */
  home: WellFormedString.min(1).optional(),
  /**
   * Limits on the pictures generate() accepts: `{ maxBytes, maxPixels, maxEdge, fetchTimeoutMs, readTimeoutMs,
   * maxRedirects, blockPrivateNetwork }`.
   */
  images: ImageLimits.default({}),
  /** How long the worker may take to start, in milliseconds (Python imports torch first; at most 2^31 − 1). Default 180000. */
  startupTimeoutMs: TimerMs.default(180_000),
  /**
   * How long starting the worker and loading the model may take together, in milliseconds (also for the reload
   * after a crash); past it load() rejects with TimeoutError and the worker is killed. Default 3600000 (an hour: a
   * first load may download the weights, about 16 GB for idefics2-8b). At most 2147483647.
   */
  loadTimeoutMs: z.number().int().positive().max(2_147_483_647).default(3_600_000),
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
  /**
   * Identical tokens for the same request run to run, alone or beside any others (default false). The fast decoder
   * then uses batch-invariant kernels (each request's numbers never depend on what shares its batch), at some cost
   * in decode speed (docs/BENCHMARKS.md); it needs a CUDA GPU of compute capability 8.0+ with Triton, else `auto`
   * uses the reference decoder (one request at a time). Sampling is reproducible only with a `seed`.
   */
  deterministic: z.boolean().default(false),
  /** Generations queued or running at once (default 256); one more is rejected with QueueFullError instead of growing memory. */
  maxQueue: z.number().int().positive().max(100_000).default(256),
};
export const LoadOptions: z.ZodObject<typeof loadShape, z.core.$strict> = z.strictObject(loadShape).superRefine((options, context) => {
  // Each replica is placed by its own device, and max_memory only bounds accelerate's "auto" placement.
  if (options.devices !== undefined && options.deviceMap !== "auto")
    context.addIssue({
      code: "custom",
      path: ["devices"],
      message: `cannot be combined with deviceMap ${JSON.stringify(options.deviceMap)}: each worker is placed on its own device; leave deviceMap out`,
    });
  if (options.maxMemory !== undefined && options.devices !== undefined)
    context.addIssue({
      code: "custom",
      path: ["maxMemory"],
      message: 'cannot be combined with `devices` (each worker holds the whole model on its device); use it with deviceMap "auto" alone',
    });
  else if (options.maxMemory !== undefined && options.deviceMap !== "auto")
    context.addIssue({
      code: "custom",
      path: ["maxMemory"],
      message: `bounds deviceMap "auto" only (deviceMap is ${JSON.stringify(options.deviceMap)}); use deviceMap "auto"`,
    });
});
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
  /** Sampling temperature, from 0.0001 (below it the logits overflow) to 100; only with `doSample`. */
  temperature: Temperature.optional(),
  /** Nucleus sampling: keep the most likely tokens whose probabilities add up to this (above 0, at most 1). */
  topP: TopP.optional(),
  /** Sample only among the `topK` most likely tokens; 0 turns top-k filtering off. */
  topK: TopK.optional(),
  /** Penalty on tokens already in the text, from 0.0001 to 100; 1 is none, above 1 discourages repeats. */
  repetitionPenalty: RepetitionPenalty.optional(),
  /** Never repeat an n-gram of this size; 0 turns it off. */
  noRepeatNgramSize: NoRepeatNgramSize.optional(),
  /** Beam search with this many beams (1–64, default 1); a stream then gets its text at the end. */
  numBeams: NumBeams.optional(),
  /** Seeds torch before generating, for reproducible sampling (0 to 2^53 − 1). */
  seed: Seed.optional(),
  /** Stop when the text ends with one of these (1–16 strings of 1–32 characters); finishReason is then `stop_string`. */
  stopStrings: StopStrings.optional(),
};
export const GenerationOptions: z.ZodObject<typeof generationShape, z.core.$strict> = z.strictObject(generationShape);
export type GenerationOptions = z.input<typeof GenerationOptions>;
export type ResolvedGenerationOptions = z.output<typeof GenerationOptions>;

// generate() and stream() take the generation options and three of their own, checked together: a wrong type
// (`images: "a"`, options `null`) is INVALID_OPTIONS, never a TypeError. Each picture is checked when it loads, the
// signal by the call itself (checkSignal); a timeout past what Node's timers hold means no timeout there.
const callShape = {
  ...generationShape,
  images: z.array(z.unknown()).optional(),
  signal: z.unknown().optional(),
  timeoutMs: z.number().int().positive().optional(),
  // Structured output (structured-output.ts checks each, and that only one is given).
  schema: z.unknown().optional(),
  choices: z.unknown().optional(),
  regex: z.unknown().optional(),
};
/** The options of one generate() or stream() call, as prepareGeneration checks them. @internal */
export const GenerateCallOptionsSchema: z.ZodObject<typeof callShape, z.core.$strict> = z.strictObject(callShape);

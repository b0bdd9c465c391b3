import { z } from "zod";

// The range of every option that crosses the wire. The user-facing options (src/options.ts) and the wire schemas
// (messages.ts) are both built from these, so what a user may pass is exactly what the worker accepts;
// docs/wire-schema.json is generated from the wire schemas and python/tests/protocol/test_wire_contract.py holds
// the worker's parser to it. Integers are zod's safe integers: at most 2^53 − 1, the largest a JS number holds exactly.

// A lone surrogate (half of a UTF-16 pair) is no character at all: Python cannot encode it (a file name, the
// tokenizer), so every string bound for the worker must be well-formed. With the `u` flag a pair is one code point
// and only a lone half is of category Cs; the test is linear in the string's length.
const LONE_SURROGATE = /\p{Cs}/u;

/** A string that is well-formed Unicode: no lone surrogate. Every string the worker receives is one. */
export const WellFormedString = z.string().refine((value) => !LONE_SURROGATE.test(value), {
  message: "must be well-formed Unicode (it holds a lone surrogate, half of a UTF-16 pair)",
  abort: true,
});

export const QuantizationMode = z.enum(["none", "8bit", "4bit"]);
export type QuantizationMode = z.infer<typeof QuantizationMode>;

export const TorchDtype = z.enum(["auto", "float32", "bfloat16", "float16"]);
export type TorchDtype = z.infer<typeof TorchDtype>;

/** 4-bit data type (bitsandbytes `bnb_4bit_quant_type`). */
export const QuantType = z.enum(["nf4", "fp4"]);
/** 4-bit: dtype of the matrix products (`bnb_4bit_compute_dtype`). */
export const ComputeDtype = TorchDtype.exclude(["auto"]);
/** Modules left unquantized (`llm_int8_skip_modules`). */
export const SkipModules = z.array(WellFormedString.min(1));
/** 8-bit: outlier threshold of LLM.int8 (`llm_int8_threshold`); zod numbers are finite. */
export const Int8Threshold = z.number().min(0);

// zod types a regex-checked string as `string`; the regex admits exactly the strings of this template type (input
// and output both: a cast to plain ZodType<T> would leave the input `unknown`, and any deviceMap would compile).
const cudaDevice = z.string().regex(/^cuda:(0|[1-9][0-9]*)$/, 'must be "auto", "cpu", "cuda" or "cuda:N"') as unknown as z.ZodType<
  `cuda:${number}`,
  `cuda:${number}`
>;
/** Where the model goes: accelerate's `"auto"`, the CPU, the current CUDA device, or one CUDA device by index (torch refuses leading zeros). */
export const DeviceMap = z.union([z.enum(["auto", "cpu", "cuda"]), cudaDevice]);
export type DeviceMap = z.infer<typeof DeviceMap>;

/** One worker's whole device: the CPU or one CUDA device by index. */
export const ReplicaDevice = z.union([z.literal("cpu"), cudaDevice]);
export type ReplicaDevice = z.infer<typeof ReplicaDevice>;

/**
 * A key of accelerate's `max_memory`: a CUDA device index (`"0"`, `"1"`, … without leading zeros) or `"cpu"`.
 * accelerate's `"disk"` (it needs an offload folder) and `"mps"` are not offered.
 */
export const MaxMemoryDevice = z.string().regex(/^(cpu|0|[1-9][0-9]*)$/, 'must be a CUDA device index ("0", "1", …) or "cpu"');
/**
 * An amount of memory: bytes as an integer, or a number with a unit, `"10GiB"`, `"500MiB"`, `"12GB"` (accelerate's
 * units: GiB, MiB, KiB are powers of 2, GB, MB, KB powers of 10; a lower-case `b`, which accelerate reads as bits, is refused).
 */
export const MemorySize = z.union([
  z.number().int().min(0),
  z.string().regex(/^[0-9]+(\.[0-9]+)?(GiB|MiB|KiB|GB|MB|KB)$/, 'must be bytes, or a number with a unit such as "10GiB" or "500MB"'),
]);
/** accelerate's `max_memory`: the most memory `deviceMap: "auto"` may give the model on each device. */
export const MaxMemory = z.record(MaxMemoryDevice, MemorySize);
export type MaxMemory = z.infer<typeof MaxMemory>;

/**
 * Every plain `attn_implementation` transformers 5.17 accepts for Idefics2 (all three towers declare flash, SDPA
 * and flex support). Left out: `paged|…` (only for transformers' continuous batching; generate() refuses it
 * without a paged cache) and hub kernel ids such as `kernels-community/flash-attn2` (code fetched at load time).
 */
export const AttnImplementation = z.enum([
  "eager",
  "sdpa",
  "flash_attention_2",
  "flash_attention_3",
  "flash_attention_4",
  "flex_attention",
]);
export type AttnImplementation = z.infer<typeof AttnImplementation>;

/** A `save_pretrained` folder or a hub id: not blank. */
export const ModelId = WellFormedString.regex(/\S/, "must be a model folder or hub id, not a blank string");
export const Revision = WellFormedString.min(1);
/** The image processor's longest edge, in pixels. */
export const LongestEdge = z.number().int().min(1).max(65_536);
export const Decoder = z.enum(["auto", "fast", "reference"]);
export const MaxBatchSize = z.number().int().min(1).max(64);

export const MaxNewTokens = z.number().int().min(1).max(1_000_000);
/** At most `maxNewTokens` as well: the worker compares the two. */
export const MinNewTokens = z.number().int().min(0).max(1_000_000);
/**
 * Logits are divided by the temperature: at 1e-300 (0 once torch makes it a float32) every logit becomes ±inf and
 * sampling fails on NaN probabilities. 1e-4 keeps a logit of 10,000 (far beyond any model's) at 1e8, well inside
 * float32, and already samples as greedy decoding does.
 */
export const MIN_TEMPERATURE = 1e-4;
export const Temperature = z.number().min(MIN_TEMPERATURE).max(100);
export const TopP = z.number().gt(0).max(1);
/** 0 turns top-k filtering off. */
export const TopK = z.number().int().min(0);
/** Positive logits of repeated tokens are divided by the penalty: the same floor as the temperature, for the same reason. */
export const MIN_REPETITION_PENALTY = 1e-4;
export const RepetitionPenalty = z.number().min(MIN_REPETITION_PENALTY).max(100);
export const NoRepeatNgramSize = z.number().int().min(0);
export const NumBeams = z.number().int().min(1).max(64);
/** torch.manual_seed takes up to 2^64 − 1; the bound is the safe-integer one, so every seed a JS number holds is sent exactly. */
export const Seed = z.number().int().min(0);
/**
 * Before the first token, transformers' StopStringCriteria compares every vocabulary token with every position of
 * every stop string (about 10 ms per stop-string character with Idefics2-8b's 32,003 tokens on a 2-core CPU) and
 * keeps a table of vocabulary × strings × twice the longest length; each step then matches the text's tail against
 * all of them. 16 strings of at most 32 characters bound that to seconds and 65 MiB at worst (measured: 7.5 s for 16
 * random strings of 32 characters); one string of 1 MiB would take hours.
 */
export const MAX_STOP_STRINGS = 16;
export const MAX_STOP_STRING_LENGTH = 32;
export const StopStrings = z.array(WellFormedString.min(1).max(MAX_STOP_STRING_LENGTH)).min(1).max(MAX_STOP_STRINGS);

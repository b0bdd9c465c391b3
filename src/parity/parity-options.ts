import { z } from "zod";
import { Messages } from "../messages.js";
import { Decoder, MaxNewTokens, QuantizationMode } from "../protocol/option-ranges.js";

/** How the SDK's answer is judged: `auto` picks `teacher-forced` for the fast decoder on a CUDA device, else `token-ids`. */
export const ParityMethod = z.enum(["auto", "token-ids", "teacher-forced"]);
export type ParityMethod = z.infer<typeof ParityMethod>;

/** What `checkParity` runs on both sides: the blog's program and the SDK, with the same inputs. */
export interface ParityOptions {
  /** A `save_pretrained` folder or a hub id; default the embedded tiny model. */
  model?: string;
  /** The conversation, in the SDK's shape (the blog's `messages`); image parts without a source take `images` in order. */
  messages: Messages;
  /** Paths or http(s) URLs for the image parts, in order (the reference program reads them itself). */
  images?: string[];
  /** `"none"` (default), `"8bit"` or `"4bit"`: the blog's `BitsAndBytesConfig(load_in_8bit / load_in_4bit=True)` on both sides. */
  quantization?: QuantizationMode;
  /** The reference's quantization when it should differ from the SDK's: a way to see the check catch drift. */
  referenceQuantization?: QuantizationMode;
  /** The SDK's decoder: `"auto"` (default: fast on one CUDA device, else reference), `"fast"` or `"reference"`. */
  decoder?: "auto" | "fast" | "reference";
  /** `"auto"` (default), `"token-ids"` (greedy ids must be equal) or `"teacher-forced"` (logits within kernel noise). */
  method?: ParityMethod;
  /** Tokens each side generates (default 64). */
  maxNewTokens?: number;
  /** `false` turns image splitting off on both sides (the reference's `--no-image-splitting`); left out, the processor decides. */
  imageSplitting?: false;
  /** The conversation's name in the report and the JUnit file (default `"conversation"`). */
  name?: string;
  /** Use this interpreter as it is (else `IDEFICS2_PYTHON`, else the managed environment), for both sides. */
  python?: string;
  /** Where the managed environment lives (else `IDEFICS2_HOME`, else the per-user cache folder). */
  home?: string;
}

/** Each step of a parity check as it starts. */
export interface ParityProgress {
  stage: "load" | "sdk" | "reference" | "teacher-forcing";
  message: string;
}

export interface ParityCallOptions {
  /** Aborts the check: the model closes, a running Python program is killed, and checkParity rejects with AbortError. */
  signal?: AbortSignal;
  /** Called as each step starts (loading the SDK's model, generating, running the reference program). */
  onProgress?: (event: ParityProgress) => void;
}

/** @internal */
export const ParityOptionsSchema = z.strictObject({
  model: z.string().min(1).optional(),
  messages: Messages,
  images: z.array(z.string().min(1, "expected a file path, an http(s) URL or a data: URL")).optional(),
  quantization: QuantizationMode.default("none"),
  referenceQuantization: QuantizationMode.optional(),
  decoder: Decoder.default("auto"),
  method: ParityMethod.default("auto"),
  maxNewTokens: MaxNewTokens.default(64),
  imageSplitting: z.literal(false).optional(),
  name: z.string().min(1).default("conversation"),
  python: z.string().min(1).optional(),
  home: z.string().min(1).optional(),
});
/** @internal */
export type ResolvedParityOptions = z.output<typeof ParityOptionsSchema>;

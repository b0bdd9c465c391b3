import type { QuantizationMode } from "../protocol/option-ranges.js";
import type { FinishReason } from "../protocol/messages.js";
import type { TokenComparison } from "./compare-token-ids.js";
import type { LogitsComparison } from "./judge-teacher-forcing.js";

/** How the check judged the SDK: equal greedy token ids, or teacher-forced logits within kernel noise. */
export type ParityCheckMethod = "token-ids" | "teacher-forced";

/** One check of a conversation (one JUnit testcase). */
export interface ParityCheck {
  name: string;
  ok: boolean;
  /** One line: what was compared and what was found. */
  message: string;
}

/** What `checkParity` found: both sides' answers, the comparison, and a one-line verdict. */
export interface ParityReport {
  /** True only when every check holds. */
  ok: boolean;
  /** `parity: ok — …` or `parity: FAILED — …`, one line. */
  verdict: string;
  /** The conversation's name. */
  name: string;
  model: string;
  /** The SDK's quantization, and the reference's (the same unless `referenceQuantization` was given). */
  quantization: QuantizationMode;
  referenceQuantization: QuantizationMode;
  /** The decoder the SDK's model reported, and the device it ran on (`cpu`, `cuda:0`). */
  decoder: "fast" | "reference";
  device: string;
  method: ParityCheckMethod;
  maxNewTokens: number;
  /** The blog's program's greedy answer (scripts/reference/reference.py). */
  reference: { tokenIds: number[]; text: string };
  /** The SDK's answer to the same conversation. */
  sdk: { tokenIds: number[]; text: string; finishReason: FinishReason };
  /** The token ids compared; with the teacher-forced method this is information, not the verdict. */
  tokens: TokenComparison;
  /** The teacher-forced figures; null with the token-ids method. */
  logits: LogitsComparison | null;
  checks: ParityCheck[];
  timings: { sdkMs: number; referenceMs: number; teacherForcingMs: number | null; totalMs: number };
  /** When the check finished (ISO 8601). */
  finishedAt: string;
}

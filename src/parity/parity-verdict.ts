import type { TokenComparison } from "./compare-token-ids.js";
import type { LogitsComparison } from "./judge-teacher-forcing.js";
import { NOISE_FACTOR } from "./judge-teacher-forcing.js";
import type { ParityCheck } from "./parity-report.js";

/** The run a verdict describes, for its closing parenthesis. */
export interface VerdictContext {
  model: string;
  quantization: string;
  referenceQuantization: string;
  decoder: string;
  device: string;
}

/** The check of the greedy token ids: equal, up to the SDK's stop at `<end_of_utterance>`. */
export function tokenCheck(tokens: TokenComparison): ParityCheck {
  return { name: "greedy token ids equal the reference's", ok: tokens.ok, message: describeTokens(tokens) };
}

/** The two checks of the teacher-forced method: logits within the kernel noise, top-1 agreement on decisive steps. */
export function logitsChecks(logits: LogitsComparison): ParityCheck[] {
  const allowed = `${number(logits.tolerance)} = ${NOISE_FACTOR} × kernel noise ${number(logits.noise)}`;
  const within =
    logits.steps === 0
      ? "no steps to compare: the reference generated no tokens"
      : !logits.finite
        ? "a teacher-forced logit figure was not a finite number (NaN or infinity)"
        : logits.withinNoise
          ? `teacher-forced logits within noise over ${logits.steps} steps: max |Δ| ${number(logits.maxAbsErr)} ≤ ${allowed}`
          : `teacher-forced logits differ by ${number(logits.maxAbsErr)} at step ${logits.maxAbsErrStep}, above ${allowed}`;
  const disagreement = logits.firstDisagreement;
  const top1 = disagreement
    ? `top-1 differs at decisive step ${disagreement.step}: reference ${disagreement.reference}, SDK ${disagreement.sdk}, ` +
      `${logits.decisiveAgreements}/${logits.decisiveSteps} decisive steps agree`
    : `top-1 agrees on ${logits.decisiveAgreements}/${logits.decisiveSteps} decisive steps`;
  return [
    { name: "teacher-forced logits within kernel noise", ok: logits.steps > 0 && logits.withinNoise, message: within },
    { name: "top-1 agreement on decisive steps", ok: logits.steps > 0 && disagreement === null, message: top1 },
  ];
}

/** `parity: ok — …` or `parity: FAILED — …`: what failed first (or what held), then the run in parentheses. */
export function verdictLine(checks: readonly ParityCheck[], context: VerdictContext): string {
  const failed = checks.filter((check) => !check.ok);
  const ok = checks.length > 0 && failed.length === 0;
  const what = (ok ? checks : failed).map((check) => check.message).join("; ") || "nothing was checked";
  const reference =
    context.referenceQuantization === context.quantization ? "" : `, reference quantization ${context.referenceQuantization}`;
  const run = `model ${context.model}, quantization ${context.quantization}${reference}, decoder ${context.decoder} on ${context.device}`;
  return `parity: ${ok ? "ok" : "FAILED"} — ${what} (${run})`;
}

function describeTokens(tokens: TokenComparison): string {
  const difference = tokens.firstDifference;
  if (difference) {
    const side = (id: number | null) => (id === null ? "ended" : String(id));
    return `first difference at token ${difference.index} of ${tokens.referenceTokens}: reference ${side(difference.reference)}, SDK ${side(difference.sdk)}`;
  }
  if (tokens.sdkStoppedEarly) {
    return `${tokens.identical}/${tokens.sdkTokens} tokens identical, then the SDK stopped at <end_of_utterance> where the reference went on to ${tokens.referenceTokens}`;
  }
  return `${tokens.identical}/${tokens.referenceTokens} tokens identical`;
}

// Three significant figures; small figures in exponent form, so noise like 2.9e-6 stays readable.
function number(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  if (value === 0) return "0";
  return Math.abs(value) < 1e-3 ? value.toExponential(2) : String(Number(value.toPrecision(3)));
}

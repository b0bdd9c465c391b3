import { InvalidInputError } from "../errors.js";

/** The longest delay Node's timers hold; a longer one would fire at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** True for an AbortSignal, also one from another realm (a vm context, a notebook kernel) that behaves as one. */
export function isAbortSignal(value: unknown): value is AbortSignal {
  if (value instanceof AbortSignal) return true;
  if (typeof value !== "object" || value === null) return false;
  const candidate = value as Record<string, unknown>;
  return (
    typeof candidate.aborted === "boolean" &&
    typeof candidate.addEventListener === "function" &&
    typeof candidate.removeEventListener === "function"
  );
}

/** Fails when `signal` is given but is not an AbortSignal. */
export function checkSignal(signal: unknown): AbortSignal | undefined {
  if (signal === undefined || isAbortSignal(signal)) return signal;
  throw new InvalidInputError("INVALID_OPTIONS", `Expected the \`signal\` option to be an AbortSignal, got ${describe(signal)}`, {
    fix: "Pass `controller.signal` of an AbortController (or AbortSignal.timeout(ms)), or leave `signal` out.",
  });
}

/** Fails when `timeoutMs` is given but is not a positive number of milliseconds. */
export function checkTimeoutMs(timeoutMs: unknown): number | undefined {
  if (timeoutMs === undefined || (typeof timeoutMs === "number" && Number.isFinite(timeoutMs) && timeoutMs > 0)) return timeoutMs;
  throw new InvalidInputError("INVALID_OPTIONS", `Expected the \`timeoutMs\` option to be a positive number, got ${describe(timeoutMs)}`, {
    fix: "Give the call's time limit in milliseconds, or leave `timeoutMs` out.",
  });
}

// The value as the message quotes it: short, on one line, and never running a caller's toString().
function describe(value: unknown): string {
  if (value === null) return "`null`";
  if (typeof value === "string") return `\`${JSON.stringify(value.slice(0, 40))}\` (string)`;
  if (typeof value === "object") return `\`${Object.prototype.toString.call(value)}\` (object)`;
  if (typeof value === "function") return "a function";
  return `\`${String(value)}\` (${typeof value})`;
}

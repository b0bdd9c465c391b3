import { AbortError } from "../errors.js";

// Every step of loading checks the caller's signal first, and reports its reason as the cause.
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortError(signal.reason);
}

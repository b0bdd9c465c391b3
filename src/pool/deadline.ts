import { AbortError, TimeoutError } from "../errors.js";

/** A generate call's time limit: `timeoutMs` from `started` (performance.now()). */
export interface Deadline {
  started: number;
  timeoutMs: number;
}

/**
 * Waits for `promise`, but rejects with AbortError when the signal fires first, or with TimeoutError when the call's
 * deadline passes first; the promise itself runs on.
 */
export function within<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
  deadline: Deadline | undefined,
  doing = "while waiting for earlier calls",
): Promise<T> {
  if (signal?.aborted) return Promise.reject(new AbortError(signal.reason));
  if (!signal && !deadline) return promise;
  return new Promise<T>((resolve, reject) => {
    const done = () => {
      signal?.removeEventListener("abort", onAbort);
      clearTimeout(timer);
    };
    const onAbort = () => {
      done();
      reject(new AbortError(signal?.reason));
    };
    const timer =
      deadline &&
      setTimeout(
        () => {
          done();
          reject(timedOut(deadline, ` ${doing}`));
        },
        Math.max(0, deadline.started + deadline.timeoutMs - performance.now()),
      );
    signal?.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        done();
        resolve(value);
      },
      (error: unknown) => {
        done();
        reject(error);
      },
    );
  });
}

/** The TimeoutError of a generate call whose `timeoutMs` ran out, `doing` what it was waiting for. */
export function timedOut(deadline: Deadline, doing = ""): TimeoutError {
  return new TimeoutError("TIMED_OUT", `The generate call timed out after ${deadline.timeoutMs} ms${doing}`);
}

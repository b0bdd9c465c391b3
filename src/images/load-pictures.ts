import { AbortError, TimeoutError } from "../errors.js";
import type { ImageSource } from "./image-source.js";
import type { LoadImageOptions } from "./load-image-options.js";
import { loadImage } from "./load-image.js";
import type { NormalizedImage } from "./normalized-image.js";

// Node's timers hold at most 2^31 − 1 ms; a longer timeout cannot fire while the pictures load anyway.
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface LoadPicturesBounds {
  /** The call's signal: aborting rejects at once with AbortError. */
  signal?: AbortSignal | undefined;
  /** The call's timeout: past it the call rejects with TimeoutError. */
  timeoutMs?: number | undefined;
}

/**
 * Loads a call's pictures within the call's own `signal` and `timeoutMs`: the call rejects at once, whatever a
 * download or a decode is doing, and every load still running is cancelled (a download's socket is closed).
 * The first picture that fails cancels the others too.
 */
export async function loadPictures(
  sources: ImageSource[],
  limits: LoadImageOptions,
  bounds: LoadPicturesBounds = {},
): Promise<NormalizedImage[]> {
  const { signal, timeoutMs } = bounds;
  if (signal?.aborted) throw new AbortError(signal.reason);
  if (sources.length === 0) return [];
  const controller = new AbortController();
  let timedOut = false;
  const timer =
    timeoutMs !== undefined && timeoutMs <= MAX_TIMER_MS
      ? setTimeout(() => {
          timedOut = true;
          controller.abort();
        }, timeoutMs)
      : undefined;
  const onAbort = (): void => controller.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  let stop!: () => void;
  const stopped = new Promise<never>((_, reject) => {
    stop = () => reject(new AbortError(controller.signal.reason));
  });
  stopped.catch(() => {});
  controller.signal.addEventListener("abort", stop, { once: true });
  try {
    return await Promise.race([Promise.all(sources.map((source) => loadImage(source, limits, controller.signal))), stopped]);
  } catch (error) {
    if (signal?.aborted) throw new AbortError(signal.reason);
    if (timedOut) {
      throw new TimeoutError("TIMED_OUT", `The generate call timed out after ${timeoutMs} ms while loading its pictures`, {
        fix: "Raise `timeoutMs`, or check that the pictures' servers answer and their files can be read.",
      });
    }
    throw error;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
    controller.signal.removeEventListener("abort", stop);
    controller.abort();
  }
}

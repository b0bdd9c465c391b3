import { AbortError } from "./errors.js";
import type { GenerateResult, TokenEventData } from "./protocol/messages.js";
import { isAbortSignal } from "./worker/check-call-options.js";

/** Starts the generation: `onDelta` gets each token's text, `stop` aborts when the reader leaves the stream early. */
type Start<R> = (onDelta: (delta: TokenEventData) => void, stop: AbortSignal) => Promise<R>;

/** Why a stream's generation was stopped when its reader left the loop before the end. */
export class StreamLeftError extends Error {
  override name = "StreamLeftError";
  constructor() {
    super("The reader left the stream before its end, so its generation was cancelled");
  }
}

/**
 * A streamed generation: `for await (const delta of stream)` yields text deltas as tokens arrive, and
 * `await stream` (or `stream.result`) gives the whole result, which is also the iterator's return value.
 * Leaving the loop early (`break`, `return`, a throw) cancels the generation: the worker stops before its next token
 * and `result` rejects with AbortError (its `cause` a StreamLeftError). The stream errors (AbortError,
 * WorkerCrashedError, ...) if the generation fails before its result. With `schema`, `choices` or `regex` the
 * deltas are the structured answer's text as it forms, and `result` carries `object` (type `R`).
 */
export class GenerationStream<R extends GenerateResult = GenerateResult> implements AsyncIterable<string>, PromiseLike<R> {
  /** Resolves with the final result, or rejects with the generation's error. */
  readonly result: Promise<R>;
  #deltas: string[] = [];
  #wake: (() => void) | undefined;
  #settled = false;
  #iterating = false;
  readonly #signal: AbortSignal | undefined;
  readonly #left = new AbortController();

  constructor(start: Start<R>, signal?: AbortSignal) {
    this.#signal = signal;
    // Started synchronously, so a stream takes its place in line before calls made after it, and `result`
    // works without iterating.
    this.result = (async () => start((delta) => this.#push(delta.text), this.#left.signal))().then(
      (result) => {
        this.#settle();
        return result;
      },
      (error: unknown) => {
        // A failed generation ends the iteration at once: deltas not yet read are dropped.
        this.#deltas.length = 0;
        this.#settle();
        throw error;
      },
    );
    this.result.catch(() => {
      // Reported through iteration or `result`; never an unhandled rejection on its own.
    });
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<string, R, undefined> {
    if (this.#iterating) throw new TypeError("A GenerationStream can be iterated only once");
    this.#iterating = true;
    try {
      for (;;) {
        // An abort ends iteration at once, even while deltas received before it are still queued.
        if (this.#signal?.aborted) throw new AbortError(this.#signal.reason);
        const delta = this.#deltas.shift();
        if (delta !== undefined) {
          yield delta;
          continue;
        }
        if (this.#settled) return await this.result;
        await new Promise<void>((resolve) => (this.#wake = resolve));
        this.#wake = undefined;
      }
    } finally {
      // Reached early only when the reader left (break, return, throw in the loop): nobody wants the rest.
      if (!this.#settled) this.#left.abort(new StreamLeftError());
    }
  }

  /** Awaiting the stream awaits its result. */
  // biome-ignore lint/suspicious/noThenProperty: the stream is awaitable on purpose, like the promise it stands for.
  then<Fulfilled = R, Rejected = never>(
    onFulfilled?: ((value: R) => Fulfilled | PromiseLike<Fulfilled>) | null,
    onRejected?: ((reason: unknown) => Rejected | PromiseLike<Rejected>) | null,
  ): Promise<Fulfilled | Rejected> {
    return this.result.then(onFulfilled, onRejected);
  }

  #settle(): void {
    this.#settled = true;
    this.#wake?.();
  }

  #push(text: string): void {
    if (text === "") return;
    this.#deltas.push(text);
    this.#wake?.();
  }
}

/**
 * The stream of a generation whose call options may carry a `signal`; one that is not an AbortSignal is left to
 * `start` to refuse (it rejects `result`), not thrown here. @internal
 */
export function streamOf<R extends GenerateResult>(options: unknown, start: Start<R>): GenerationStream<R> {
  const signal: unknown = options !== null && typeof options === "object" ? (options as { signal?: unknown }).signal : undefined;
  return new GenerationStream(start, isAbortSignal(signal) ? signal : undefined);
}

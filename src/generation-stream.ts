import { AbortError } from "./errors.js";
import type { GenerateResult, TokenEventData } from "./protocol/messages.js";

type Start = (onDelta: (delta: TokenEventData) => void) => Promise<GenerateResult>;

/**
 * A streamed generation: `for await (const delta of stream)` yields text deltas as tokens arrive;
 * `result` resolves with the whole result, which is also the iterator's return value.
 * The stream errors (AbortError, WorkerCrashedError, ...) if the generation fails before its result.
 */
export class GenerationStream implements AsyncIterable<string> {
  /** Resolves with the final result, or rejects with the generation's error. */
  readonly result: Promise<GenerateResult>;
  #deltas: string[] = [];
  #wake: (() => void) | undefined;
  #settled = false;
  #iterating = false;
  readonly #signal: AbortSignal | undefined;

  constructor(start: Start, signal?: AbortSignal) {
    this.#signal = signal;
    // Started synchronously, so a stream takes its place in line before calls made after it, and `result`
    // works without iterating.
    this.result = (async () => start((delta) => this.#push(delta.text)))().then(
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

  async *[Symbol.asyncIterator](): AsyncGenerator<string, GenerateResult, undefined> {
    if (this.#iterating) throw new TypeError("A GenerationStream can be iterated only once");
    this.#iterating = true;
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

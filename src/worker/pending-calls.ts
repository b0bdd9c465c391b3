import { AbortError, TimeoutError } from "../errors.js";
import type { EventFrame, MethodName } from "../protocol/messages.js";
import { checkSignal, checkTimeoutMs, MAX_TIMER_MS } from "./check-call-options.js";

export interface CallOptions {
  signal?: AbortSignal | undefined;
  timeoutMs?: number | undefined;
  onEvent?: ((event: EventFrame) => void) | undefined;
}

export interface PendingCall {
  method: MethodName;
  onEvent: ((event: EventFrame) => void) | undefined;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

interface Entry extends PendingCall {
  settle: () => void;
}

/** Calls sent and not yet answered, by id; each leaves the table, its listener and timer cleared, before it settles. */
export class PendingCalls {
  #calls = new Map<number, Entry>();
  #nextId = 1;
  readonly #onCancel: (id: number) => void;
  readonly #onChange: ((size: number) => void) | undefined;

  /** `onCancel` hears the id of each call rejected by its signal or timeout; `onChange` the table's size on every change. */
  constructor(onCancel: (id: number) => void, onChange?: (size: number) => void) {
    this.#onCancel = onCancel;
    this.#onChange = onChange;
  }

  get size(): number {
    return this.#calls.size;
  }

  /**
   * Checks the options, builds the call's frame under a fresh id, and only then registers the call (its timer and
   * abort listener) and hands the frame to `write`. A call refused on the way (bad options, a frame that cannot be
   * encoded, a signal already aborted) rejects with nothing registered, so nothing is left holding the worker.
   */
  add<T>(
    method: MethodName,
    options: CallOptions,
    encode: (id: number) => readonly Uint8Array[],
    write: (frame: readonly Uint8Array[]) => void,
  ): Promise<T> {
    let frame: readonly Uint8Array[];
    let id: number;
    let signal: AbortSignal | undefined;
    let timeoutMs: number | undefined;
    try {
      signal = checkSignal(options.signal);
      timeoutMs = checkTimeoutMs(options.timeoutMs);
      if (signal?.aborted) throw new AbortError(signal.reason);
      id = this.#nextId++;
      frame = encode(id);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => this.#cancel(id, new AbortError(signal?.reason));
      const settle = () => {
        if (timer) clearTimeout(timer);
        this.#calls.delete(id);
        try {
          signal?.removeEventListener("abort", onAbort);
        } catch {
          // A signal-like object whose removeEventListener throws: the call settles all the same.
        }
        this.#onChange?.(this.#calls.size);
      };
      try {
        signal?.addEventListener("abort", onAbort, { once: true });
      } catch (error) {
        reject(error instanceof Error ? error : new Error(String(error)));
        return;
      }
      this.#calls.set(id, { method, onEvent: options.onEvent, resolve: (value) => resolve(value as T), reject, settle });
      // Beyond what Node's timers hold the timeout could never fire in time anyway; such a call has none.
      if (timeoutMs !== undefined && timeoutMs <= MAX_TIMER_MS) {
        timer = setTimeout(
          () => this.#cancel(id, new TimeoutError("TIMED_OUT", `The ${method} call timed out after ${timeoutMs} ms`)),
          timeoutMs,
        );
      }
      this.#onChange?.(this.#calls.size);
      write(frame);
    });
  }

  get(id: number): PendingCall | undefined {
    return this.#calls.get(id);
  }

  /** Removes the call so that it can be settled; undefined for an id already settled or never sent. */
  take(id: number): PendingCall | undefined {
    const entry = this.#calls.get(id);
    entry?.settle();
    return entry;
  }

  rejectAll(error: Error): void {
    for (const entry of [...this.#calls.values()]) {
      entry.settle();
      entry.reject(error);
    }
  }

  #cancel(id: number, error: Error): void {
    const call = this.take(id);
    if (!call) return;
    call.reject(error);
    this.#onCancel(id);
  }
}

import { AbortError, TimeoutError } from "../errors.js";
import type { EventFrame, MethodName } from "../protocol/messages.js";

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

  /** Registers a call under a fresh id, then hands the id to `send`. */
  add<T>(method: MethodName, options: CallOptions, send: (id: number) => void): Promise<T> {
    const { signal, timeoutMs, onEvent } = options;
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => this.#cancel(id, new AbortError(signal?.reason));
      const settle = () => {
        signal?.removeEventListener("abort", onAbort);
        if (timer) clearTimeout(timer);
        this.#calls.delete(id);
        this.#onChange?.(this.#calls.size);
      };
      this.#calls.set(id, { method, onEvent, resolve: (value) => resolve(value as T), reject, settle });
      signal?.addEventListener("abort", onAbort, { once: true });
      if (timeoutMs !== undefined) {
        timer = setTimeout(
          () => this.#cancel(id, new TimeoutError("TIMED_OUT", `The ${method} call timed out after ${timeoutMs} ms`)),
          timeoutMs,
        );
      }
      this.#onChange?.(this.#calls.size);
      send(id);
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

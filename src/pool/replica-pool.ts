import { ClosedError, InvalidInputError } from "../errors.js";
import type { LoadResult } from "../protocol/messages.js";
import type { StartLoadedWorkerOptions } from "../worker/start-loaded-worker.js";
import type { WorkerProcess } from "../worker/worker-process.js";
import { type Deadline, within } from "./deadline.js";
import { Replica, type ReplicaSettings, type ReplicaState } from "./replica.js";

export type { ReplicaState } from "./replica.js";

/** One worker of a model, as `model.replicas` reports it. */
export interface ReplicaStatus {
  /** Its place in `devices` (0 for a model of one worker). */
  index: number;
  /** The deviceMap it loaded with: its entry of `devices`, or the model's `deviceMap`. */
  device: string;
  /**
   * `ready`; `crashed` (replaced by the next call that is routed to it or finds no other); `restarting`; or
   * `failed` (a failure no restart mends, or `restartOnCrash` is off: calls go to the others).
   */
  state: ReplicaState;
  /** Its worker's process id; it changes when a crashed worker is replaced. */
  pid: number;
  /** Generations running or queued on it now. */
  inFlight: number;
  /** Generations routed to it since the load. */
  routed: number;
  /** How many times its crashed worker has been replaced. */
  restarts: number;
  /** What its worker loaded (device, dtype, memory at the load). */
  info: LoadResult;
}

/** A call's hold on the worker it was routed to: send to `worker` at once, `release()` when the call settles. @internal */
export interface ReplicaLease {
  worker: WorkerProcess;
  release: () => void;
}

/**
 * The workers that hold a model, one per device: each call goes to the ready one with the fewest calls in flight
 * (ties in turn), a crashed one is replaced in the background while the others serve, and only when none is ready
 * does a call wait for a replacement. @internal
 */
export class ReplicaPool {
  readonly #replicas: readonly [Replica, ...Replica[]];
  // Where the search for the least loaded starts: just after the last one chosen, so ties take turns.
  #cursor = 0;
  #closed = false;

  private constructor(replicas: readonly [Replica, ...Replica[]]) {
    this.#replicas = replicas;
  }

  /**
   * Starts one replica per settings, all at once. If one fails, the others are stopped (or closed, if loaded) and
   * the first failure is thrown. With several, each progress message names its replica.
   */
  static async start(
    settings: readonly ReplicaSettings[],
    options: { signal: AbortSignal | undefined; onProgress: StartLoadedWorkerOptions["onProgress"] },
  ): Promise<ReplicaPool> {
    const several = settings.length > 1;
    const stop = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
    let failed: { error: unknown } | undefined;
    const started = await Promise.allSettled(
      settings.map((one, index) => {
        const label = `replica ${index} (${one.params.deviceMap})`;
        const labelled = several ? { ...one, onProgress: withLabel(one.onProgress, label) } : one;
        return Replica.start(labelled, { signal, onProgress: several ? withLabel(options.onProgress, label) : options.onProgress }).catch(
          (error: unknown) => {
            // The first failure is the one to report; the others' AbortErrors follow from stopping them.
            failed ??= { error };
            stop.abort(error);
            throw error;
          },
        );
      }),
    );
    const replicas = started.flatMap((outcome) => (outcome.status === "fulfilled" ? [outcome.value] : []));
    const [first, ...rest] = replicas;
    if (failed || !first) {
      await Promise.all(replicas.map((replica) => replica.close()));
      throw failed
        ? failed.error
        : new InvalidInputError("INVALID_OPTIONS", "Invalid load option: `devices` names no device", { fix: "List at least one." });
    }
    return new ReplicaPool([first, ...rest]);
  }

  /** The first replica: the one `model.info`, `workerPid` and `workerInfo()` describe by default. */
  get first(): Replica {
    return this.#replicas[0];
  }

  get size(): number {
    return this.#replicas.length;
  }

  /** The replica at `index`, or undefined. */
  at(index: number): Replica | undefined {
    return this.#replicas[index];
  }

  /** Restarts, all replicas together. */
  get restarts(): number {
    return this.#replicas.reduce((sum, replica) => sum + replica.restarts, 0);
  }

  status(): ReplicaStatus[] {
    return this.#replicas.map((replica, index) => ({
      index,
      device: replica.device,
      state: replica.state,
      pid: replica.pid,
      inFlight: replica.inFlight,
      routed: replica.routed,
      restarts: replica.restarts,
      info: replica.info,
    }));
  }

  /**
   * Routes a call: the ready replica with the fewest calls in flight. When none is ready, waits for the first
   * crashed one to come back (it gives up when its signal aborts or its time runs out); when none can, throws why.
   */
  async acquire(signal?: AbortSignal, deadline?: Deadline): Promise<ReplicaLease> {
    for (;;) {
      if (this.#closed) throw new ClosedError();
      for (const replica of this.#replicas) replica.restartIfCrashed();
      const chosen = this.#leastLoaded();
      if (chosen) return chosen.begin();
      const coming = this.#replicas.flatMap((replica) => (replica.restarting ? [replica.restarting] : []));
      if (coming.length === 0) throw this.#replicas.find((replica) => replica.failure)?.failure ?? new ClosedError();
      try {
        await within(firstBack(coming), signal, deadline, "while the worker restarted");
      } catch (error) {
        if (this.#closed) throw new ClosedError();
        throw error;
      }
    }
  }

  #leastLoaded(): Replica | undefined {
    const count = this.#replicas.length;
    let chosen: { replica: Replica; index: number } | undefined;
    for (let step = 0; step < count; step++) {
      const index = (this.#cursor + step) % count;
      const replica = this.#replicas[index];
      if (replica?.state !== "ready") continue;
      if (!chosen || replica.inFlight < chosen.replica.inFlight) chosen = { replica, index };
    }
    if (chosen) this.#cursor = (chosen.index + 1) % count;
    return chosen?.replica;
  }

  /** Ends every worker (restarts under way are stopped); always settles, with every worker gone. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#replicas.map((replica) => replica.close()));
  }
}

// Settles when the first restart succeeds, or with the first one's error when all of them fail.
async function firstBack(restarts: Promise<void>[]): Promise<void> {
  try {
    await Promise.any(restarts);
  } catch (error) {
    throw error instanceof AggregateError ? error.errors[0] : error;
  }
}

function withLabel<E extends { message: string }>(listener: ((event: E) => void) | undefined, label: string) {
  return listener && ((event: E) => listener({ ...event, message: `${label}: ${event.message}` }));
}

import { ClosedError, type Idefics2Error, WorkerCrashedError } from "../errors.js";
import type { LoadProgress } from "../load-progress.js";
import { stampedListener } from "../progress-event.js";
import type { LoadParams, LoadResult } from "../protocol/messages.js";
import { type StartLoadedWorkerOptions, startLoadedWorker } from "../worker/start-loaded-worker.js";
import type { WorkerLaunch, WorkerProcess } from "../worker/worker-process.js";
import { type Deadline, within } from "./deadline.js";

/** How a replica starts its worker, and starts it again after a crash. @internal */
export interface ReplicaSettings {
  launch: WorkerLaunch;
  /** The load params, with this replica's `deviceMap`. */
  params: LoadParams;
  startupTimeoutMs: number;
  loadTimeoutMs: number;
  restartOnCrash: boolean;
  onStderr: ((line: string) => void) | undefined;
  /** The load's listener (already contained); a restart reports to it with its own elapsed times. */
  onProgress: ((event: LoadProgress) => void) | undefined;
}

/**
 * Where a replica stands: serving; crashed (the next call routed to it, or the next that finds no other, replaces
 * its worker); replacing its crashed worker; or down for good (a failure no restart mends, or restarts are off).
 */
export type ReplicaState = "ready" | "crashed" | "restarting" | "failed";

/**
 * One worker holding the whole model, and what replaces it when it crashes: the unit a model's calls are routed
 * to. It counts the calls in flight on it, so the least loaded can be chosen. @internal
 */
export class Replica {
  readonly #settings: ReplicaSettings;
  #worker: WorkerProcess;
  #info: LoadResult;
  #restarting: Promise<void> | undefined;
  #restarts = 0;
  #inFlight = 0;
  #routed = 0;
  #closed = false;
  // Aborted by close(): a restart still under way stops and its worker is killed.
  readonly #lifetime = new AbortController();

  private constructor(settings: ReplicaSettings, worker: WorkerProcess, info: LoadResult) {
    this.#settings = settings;
    this.#worker = worker;
    this.#info = info;
  }

  /** Starts a worker and loads the model into it; `onProgress` gets the load's events (stamped by the caller). */
  static async start(
    settings: ReplicaSettings,
    options: { signal: AbortSignal | undefined; onProgress: StartLoadedWorkerOptions["onProgress"] },
  ): Promise<Replica> {
    const { worker, info } = await startLoadedWorker(settings.launch, settings.params, { ...settings, ...options });
    return new Replica(settings, worker, info);
  }

  /** The deviceMap it loads with. */
  get device(): string {
    return this.#settings.params.deviceMap;
  }

  /** What its worker loaded; it changes when a crashed worker is replaced. */
  get info(): LoadResult {
    return this.#info;
  }

  get pid(): number {
    return this.#worker.pid;
  }

  get restarts(): number {
    return this.#restarts;
  }

  /** Calls routed to it that have not settled. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Calls routed to it since the load. */
  get routed(): number {
    return this.#routed;
  }

  get state(): ReplicaState {
    if (!this.#worker.failure) return "ready";
    if (this.#restarting) return "restarting";
    return this.#restartable() ? "crashed" : "failed";
  }

  /** Why its worker stopped, while it is stopped. */
  get failure(): Idefics2Error | undefined {
    return this.#worker.failure;
  }

  /** Under way while a crashed worker is being replaced; settles when it is, or when that failed. */
  get restarting(): Promise<void> | undefined {
    return this.#restarting;
  }

  /**
   * Counts a call from now until `release()`: the caller sends it to `worker` at once. A call whose worker crashed
   * starts its replacement as it is released, so the replica comes back while the others serve.
   */
  begin(): { worker: WorkerProcess; release: () => void } {
    const worker = this.#worker;
    this.#inFlight++;
    this.#routed++;
    let released = false;
    return {
      worker,
      release: () => {
        if (released) return;
        released = true;
        this.#inFlight--;
        this.restartIfCrashed();
      },
    };
  }

  /** Starts replacing the worker in the background if it crashed and restarts are on (once, however often asked). */
  restartIfCrashed(): void {
    if (this.#closed || this.#restarting || !this.#restartable()) return;
    const restarting = this.#restart().finally(() => (this.#restarting = undefined));
    // Its failure reaches the calls that wait for it; one that gave up already must not leave it unhandled.
    restarting.catch(() => undefined);
    this.#restarting = restarting;
  }

  /**
   * The worker, replaced first if it crashed (once, however many calls are waiting) and restarts are on. A call
   * waiting for the restart gives up when its signal aborts or its time runs out; the restart goes on for the others.
   */
  async liveWorker(signal?: AbortSignal, deadline?: Deadline): Promise<WorkerProcess> {
    if (this.#closed) throw new ClosedError();
    const failure = this.#worker.failure;
    if (!failure) return this.#worker;
    this.restartIfCrashed();
    if (!this.#restarting) throw failure;
    try {
      await within(this.#restarting, signal, deadline, "while the worker restarted");
    } catch (error) {
      if (this.#closed) throw new ClosedError();
      throw error;
    }
    if (this.#closed) throw new ClosedError();
    return this.#worker;
  }

  #restartable(): boolean {
    return this.#settings.restartOnCrash && this.#worker.failure instanceof WorkerCrashedError;
  }

  async #restart(): Promise<void> {
    const { launch, params } = this.#settings;
    const report = stampedListener(this.#settings.onProgress);
    report?.({ type: "stage", stage: "restart", message: `The worker crashed; starting a new one and loading ${params.model} again` });
    const { worker, info } = await startLoadedWorker(launch, params, {
      ...this.#settings,
      signal: this.#lifetime.signal,
      onProgress: report,
    });
    if (this.#closed) {
      await worker.close();
      return;
    }
    this.#worker = worker;
    this.#info = info;
    this.#restarts++;
  }

  /** Ends the worker; a restart under way is stopped and its worker killed. Always settles, with the worker gone. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#lifetime.abort(new ClosedError());
    try {
      await this.#restarting?.catch(() => undefined);
    } finally {
      await this.#worker.close();
    }
  }
}

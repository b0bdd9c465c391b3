import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { AbortError, ClosedError, QueueFullError, TimeoutError, WorkerCrashedError } from "./errors.js";
import { checkBitsandbytes } from "./runtime/check-bitsandbytes.js";
import { LoadOptions, type ImageLimits, type ResolvedLoadOptions } from "./options.js";
import type { LoadParams, LoadResult, GenerateResult, InfoResult, ReleaseMemoryResult, TokenEventData } from "./protocol/messages.js";
import { ensurePythonEnvironment, type PythonEnvironment } from "./runtime/python-environment.js";
import { workerCommand } from "./runtime/worker-command.js";
import { checkSignal, isAbortSignal, MAX_TIMER_MS } from "./worker/check-call-options.js";
import { checkRequestSize } from "./worker/check-request-size.js";
import { contained } from "./worker/contained.js";
import { startLoadedWorker } from "./worker/start-loaded-worker.js";
import type { WorkerLaunch, WorkerProcess } from "./worker/worker-process.js";
import { GenerationStream } from "./generation-stream.js";
import { ChatSession, type ChatOptions, type TurnExtras } from "./chat-session.js";
import { prepareGeneration, type GenerateCallOptions } from "./prepare-generation.js";
import { parseOrThrow } from "./parse-or-throw.js";
import type { LoadProgress } from "./load-progress.js";
import { stampedListener } from "./progress-event.js";
import type { Messages } from "./messages.js";
import type { StructuredResult } from "./structured-output.js";

export type GenerationResult = GenerateResult;
export type ModelInfo = LoadResult;

export type { LoadProgress } from "./load-progress.js";

export interface LoadCallOptions {
  /** Aborts the load: the environment set-up or the worker stops and load() rejects with AbortError. */
  signal?: AbortSignal;
  /**
   * Each step of the load as it happens: `stage` changes, `log` lines of pip and venv, `progress` counts. An
   * exception it throws is ignored.
   */
  onProgress?: (event: LoadProgress) => void;
  /** The worker's stderr, line by line (transformers warnings and the like). An exception it throws is ignored. */
  onStderr?: (line: string) => void;
}

/** An Idefics2 model held by a Python worker. Create with `Idefics2.load()`, end with `close()` or `await using`. */
export class Idefics2 {
  readonly environment: PythonEnvironment;
  #worker: WorkerProcess;
  #info: ModelInfo;
  #settings: Settings;
  #restarting: Promise<void> | undefined;
  #restarts = 0;
  #inFlight = 0;
  #sendOrder: Promise<void> = Promise.resolve();
  #closed = false;
  // Aborted by close(): a restart still under way stops and its worker is killed.
  readonly #lifetime = new AbortController();

  private constructor(worker: WorkerProcess, info: ModelInfo, environment: PythonEnvironment, settings: Settings) {
    this.#worker = worker;
    this.#info = info;
    this.environment = environment;
    this.#settings = settings;
  }

  /** Finds or creates the Python environment, starts a worker and loads the model into it. */
  static async load(options: LoadOptions & LoadCallOptions = {}): Promise<Idefics2> {
    const { signal: givenSignal, onProgress: givenOnProgress, onStderr, ...rest } = options;
    const resolved = parseOrThrow(LoadOptions, rest, "INVALID_OPTIONS", "load option");
    const signal = checkSignal(givenSignal);
    if (signal?.aborted) throw new AbortError(signal.reason);
    const onProgress = contained(givenOnProgress);

    const report = stampedListener(onProgress);
    const environment = await ensurePythonEnvironment({
      python: resolved.python,
      home: resolved.home,
      // Probing an interpreter is part of the start: it gets no longer than the worker's own start.
      probeTimeoutMs: Math.min(PROBE_TIMEOUT_MS, resolved.startupTimeoutMs),
      signal,
      onProgress: report,
    });
    const quantization = typeof resolved.quantization === "string" ? resolved.quantization : resolved.quantization.mode;
    if (quantization !== "none") {
      const missing = checkBitsandbytes(environment.versions, environment.python);
      if (missing) throw missing;
    }
    const settings: Settings = {
      launch: workerCommand(environment),
      params: loadParams(resolved),
      imageLimits: resolved.images,
      startupTimeoutMs: resolved.startupTimeoutMs,
      loadTimeoutMs: resolved.loadTimeoutMs,
      restartOnCrash: resolved.restartOnCrash,
      maxQueue: resolved.maxQueue,
      onStderr,
      onProgress,
    };
    const { worker, info } = await startLoadedWorker(settings.launch, settings.params, { ...settings, signal, onProgress: report });
    return new Idefics2(worker, info, environment, settings);
  }

  /** What the worker loaded: device, dtype, quantization, image settings, load time. */
  get info(): ModelInfo {
    return this.#info;
  }

  /** The worker's process id; it changes when a crashed worker is replaced. */
  get workerPid(): number {
    return this.#worker.pid;
  }

  /** How many times a crashed worker has been replaced. */
  get restarts(): number {
    return this.#restarts;
  }

  /**
   * Generates an answer to the conversation; resolves with text, token ids, finish reason, usage and timings.
   * With `schema` (zod or JSON Schema), `choices` or `regex`, decoding is constrained to it and the result also
   * carries `object`: the answer parsed and checked, typed by the option (`z.infer` of a zod schema).
   */
  async generate<const O extends GenerateCallOptions = GenerateCallOptions>(messages: Messages, options?: O): Promise<StructuredResult<O>> {
    return this.#run(messages, options === undefined ? {} : options) as Promise<StructuredResult<O>>;
  }

  /**
   * Streams the answer: iterate for text deltas; `result` resolves with the same result generate() gives
   * (it is also the iterator's return value). Aborting ends the iteration with an AbortError.
   */
  stream<const O extends GenerateCallOptions = GenerateCallOptions>(
    messages: Messages,
    options?: O,
  ): GenerationStream<StructuredResult<O>> {
    const given: GenerateCallOptions = options === undefined ? {} : options;
    // A signal that is not one is refused by the call itself (the stream's `result`), not here.
    const signal: unknown = (given as GenerateCallOptions | null)?.signal;
    return new GenerationStream(
      (onDelta, stop) => this.#run(messages, given, { onDelta, stop }) as Promise<StructuredResult<O>>,
      isAbortSignal(signal) ? signal : undefined,
    );
  }

  /**
   * A conversation that keeps its history: each `send()` answers with a GenerationStream (iterate it, or await it)
   * and, once the answer completes, adds the turn and the answer to the history. `options` sets a system turn,
   * a saved history to go on from, and the generation options every turn starts from.
   */
  chat(options: ChatOptions = {}): ChatSession {
    if (this.#closed) throw new ClosedError();
    return new ChatSession(
      (messages, turnOptions, extras) =>
        new GenerationStream(
          (onDelta, stop) => this.#run(messages, turnOptions, { ...extras, onDelta, stop }),
          isAbortSignal(turnOptions.signal) ? turnOptions.signal : undefined,
        ),
      () => this.#info.maxContext,
      options,
    );
  }

  async #run(messages: Messages, options: GenerateCallOptions, extras: RunExtras = {}): Promise<GenerationResult> {
    const started = performance.now();
    if (this.#closed) throw new ClosedError();
    const given = checkSignal((options as GenerateCallOptions | null)?.signal);
    const { onDelta, stop } = extras;
    const signal = given && stop ? AbortSignal.any([given, stop]) : (given ?? stop);
    if (this.#inFlight >= this.#settings.maxQueue) {
      throw new QueueFullError(
        "QUEUE_FULL",
        `${this.#inFlight} generations are already queued or running (maxQueue ${this.#settings.maxQueue})`,
        {
          fix: "Wait for some to finish, or load with a larger `maxQueue`.",
        },
      );
    }
    this.#inFlight++;
    // Calls reach the worker in the order they were made, although their images decode concurrently: each waits
    // until every earlier call has been sent or has given up.
    const earlier = this.#sendOrder;
    let sent!: () => void;
    const mine = new Promise<void>((resolve) => (sent = resolve));
    this.#sendOrder = Promise.all([earlier, mine]).then(() => undefined);
    try {
      const prepared = await prepareGeneration(messages, options, this.#settings.imageLimits, {
        stream: onDelta !== undefined,
        reserveNewTokens: extras.reserveNewTokens,
        pictures: extras.pictures,
      });
      checkRequestSize(prepared.params, prepared.payload.length);
      // The call's timeoutMs runs from the call: it covers waiting for earlier calls and for a worker's restart.
      const timeoutMs = options.timeoutMs;
      const deadline = timeoutMs === undefined || timeoutMs > MAX_TIMER_MS ? undefined : { started, timeoutMs };
      await within(earlier, signal, deadline);
      const worker = await this.#liveWorker(signal, deadline);
      const answer = worker.request("generate", prepared.params, {
        payload: prepared.payload,
        signal,
        timeoutMs: deadline && Math.max(1, Math.ceil(deadline.started + deadline.timeoutMs - performance.now())),
        onEvent: onDelta && ((event) => event.event === "token" && onDelta(event.data)),
      });
      sent();
      try {
        const result = await answer;
        // A structured answer's text becomes `object`, or a StructuredOutputError (never a half object).
        return prepared.structure ? prepared.structure.finish(result) : result;
      } catch (error) {
        // The worker got what was left of the call's time; the caller hears of the time it gave.
        if (error instanceof TimeoutError && deadline) throw timedOut(deadline);
        throw error;
      }
    } finally {
      sent();
      this.#inFlight--;
    }
  }

  // The worker, replaced first if it crashed (once, however many calls are waiting) and restarts are on. A call
  // waiting for the restart gives up when its signal aborts or its time runs out; the restart goes on for the others.
  async #liveWorker(signal?: AbortSignal, deadline?: Deadline): Promise<WorkerProcess> {
    if (this.#closed) throw new ClosedError();
    const failure = this.#worker.failure;
    if (!failure) return this.#worker;
    if (!this.#settings.restartOnCrash || !(failure instanceof WorkerCrashedError)) throw failure;
    if (!this.#restarting) {
      const restarting = this.#restart().finally(() => (this.#restarting = undefined));
      // Its failure reaches the calls that wait for it; one that gave up already must not leave it unhandled.
      restarting.catch(() => undefined);
      this.#restarting = restarting;
    }
    try {
      await within(this.#restarting, signal, deadline, "while the worker restarted");
    } catch (error) {
      if (this.#closed) throw new ClosedError();
      throw error;
    }
    if (this.#closed) throw new ClosedError();
    return this.#worker;
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

  /** Versions, CUDA devices and memory as the worker sees them. */
  async workerInfo(options: { signal?: AbortSignal } = {}): Promise<InfoResult> {
    const signal = checkSignal(options?.signal);
    const worker = await this.#liveWorker(signal);
    return worker.request("info", {}, { signal });
  }

  /**
   * Gives back what the fast decoder holds between requests (its KV cache and captured CUDA graphs), so an idle
   * model keeps only its weights. Waits for running generations to finish first; the next request regrows the
   * cache. With the reference decoder there is nothing to free and it reports 0.
   */
  async releaseMemory(options: { signal?: AbortSignal } = {}): Promise<ReleaseMemoryResult> {
    const signal = checkSignal(options?.signal);
    const worker = await this.#liveWorker(signal);
    return worker.request("releaseMemory", {}, { signal });
  }

  /**
   * Ends the worker and frees the model; pending calls reject with ClosedError. A restart under way is stopped and
   * its worker killed. Safe to call twice; always settles, with the worker gone.
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#lifetime.abort(new ClosedError());
    try {
      await this.#restarting?.catch(() => undefined);
    } finally {
      await this.#worker.close();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

const PROBE_TIMEOUT_MS = 60_000;

/** How #run is called beyond a call's messages and options. */
interface RunExtras extends TurnExtras {
  /** Each token's text, for a stream. */
  onDelta?: (delta: TokenEventData) => void;
  /** Aborts the call when a stream's reader leaves early. */
  stop?: AbortSignal;
}

interface Settings {
  launch: WorkerLaunch;
  params: LoadParams;
  imageLimits: ImageLimits;
  startupTimeoutMs: number;
  loadTimeoutMs: number;
  restartOnCrash: boolean;
  maxQueue: number;
  onStderr: ((line: string) => void) | undefined;
  onProgress: ((event: LoadProgress) => void) | undefined;
}

/** A generate call's time limit: `timeoutMs` from `started` (performance.now()). */
interface Deadline {
  started: number;
  timeoutMs: number;
}

// Waits for `promise`, but rejects with AbortError when the signal fires first, or with TimeoutError when the
// call's deadline passes first; the promise itself runs on.
function within<T>(
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

function timedOut(deadline: Deadline, doing = ""): TimeoutError {
  return new TimeoutError("TIMED_OUT", `The generate call timed out after ${deadline.timeoutMs} ms${doing}`);
}

function loadParams(options: ResolvedLoadOptions): LoadParams {
  const quantization = typeof options.quantization === "string" ? { mode: options.quantization } : options.quantization;
  // A local folder is sent as an absolute path; anything else is a hub id for from_pretrained.
  const model = existsSync(options.model) ? resolve(options.model) : options.model;
  return {
    model,
    revision: options.revision ?? null,
    quantization: {
      mode: quantization.mode,
      quantType: quantization.quantType ?? null,
      doubleQuant: quantization.doubleQuant ?? null,
      computeDtype: quantization.computeDtype ?? null,
      skipModules: quantization.skipModules ?? null,
      int8Threshold: quantization.int8Threshold ?? null,
    },
    deviceMap: options.deviceMap,
    dtype: options.dtype,
    attnImplementation: options.attnImplementation ?? null,
    doImageSplitting: options.imageSplitting ?? null,
    longestEdge: options.longestEdge ?? null,
    trustRemoteCode: options.trustRemoteCode,
    localFilesOnly: options.localFilesOnly,
    decoder: options.decoder,
    maxBatchSize: options.maxBatchSize,
  };
}

import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { AbortError, ClosedError, QueueFullError, WorkerCrashedError } from "./errors.js";
import { checkBitsandbytes } from "./runtime/check-bitsandbytes.js";
import { LoadOptions, type ImageLimits, type ResolvedLoadOptions } from "./options.js";
import type { LoadParams, LoadResult, GenerateResult, InfoResult, ReleaseMemoryResult, TokenEventData } from "./protocol/messages.js";
import { ensurePythonEnvironment, type PythonEnvironment } from "./runtime/python-environment.js";
import { workerCommand } from "./runtime/worker-command.js";
import { startLoadedWorker } from "./worker/start-loaded-worker.js";
import type { WorkerLaunch, WorkerProcess } from "./worker/worker-process.js";
import { GenerationStream } from "./generation-stream.js";
import { prepareGeneration, type GenerateCallOptions } from "./prepare-generation.js";
import { parseOrThrow } from "./parse-or-throw.js";
import type { LoadProgress } from "./load-progress.js";
import { stampedListener } from "./progress-event.js";
import type { Messages } from "./messages.js";

export type GenerationResult = GenerateResult;
export type ModelInfo = LoadResult;

export type { LoadProgress } from "./load-progress.js";

export interface LoadCallOptions {
  /** Aborts the load: the environment set-up or the worker stops and load() rejects with AbortError. */
  signal?: AbortSignal;
  /** Each step of the load as it happens: `stage` changes, `log` lines of pip and venv, `progress` counts. */
  onProgress?: (event: LoadProgress) => void;
  /** The worker's stderr, line by line (transformers warnings and the like). */
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

  private constructor(worker: WorkerProcess, info: ModelInfo, environment: PythonEnvironment, settings: Settings) {
    this.#worker = worker;
    this.#info = info;
    this.environment = environment;
    this.#settings = settings;
  }

  /** Finds or creates the Python environment, starts a worker and loads the model into it. */
  static async load(options: LoadOptions & LoadCallOptions = {}): Promise<Idefics2> {
    const { signal, onProgress, onStderr, ...rest } = options;
    const resolved = parseOrThrow(LoadOptions, rest, "INVALID_OPTIONS", "load option");
    if (signal?.aborted) throw new AbortError(signal.reason);

    const report = stampedListener(onProgress);
    const environment = await ensurePythonEnvironment({ python: resolved.python, home: resolved.home, signal, onProgress: report });
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

  /** Generates an answer to the conversation; resolves with text, token ids, finish reason, usage and timings. */
  async generate(messages: Messages, options: GenerateCallOptions = {}): Promise<GenerationResult> {
    return this.#run(messages, options, undefined);
  }

  /**
   * Streams the answer: iterate for text deltas; `result` resolves with the same result generate() gives
   * (it is also the iterator's return value). Aborting ends the iteration with an AbortError.
   */
  stream(messages: Messages, options: GenerateCallOptions = {}): GenerationStream {
    return new GenerationStream((onDelta) => this.#run(messages, options, onDelta), options.signal);
  }

  async #run(
    messages: Messages,
    options: GenerateCallOptions,
    onDelta: ((delta: TokenEventData) => void) | undefined,
  ): Promise<GenerationResult> {
    if (this.#closed) throw new ClosedError();
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
    // Calls reach the worker in the order they were made, although their images decode concurrently.
    const earlier = this.#sendOrder;
    let sent!: () => void;
    this.#sendOrder = new Promise<void>((resolve) => (sent = resolve));
    try {
      const prepared = await prepareGeneration(messages, options, this.#settings.imageLimits, onDelta !== undefined);
      await earlier;
      const worker = await this.#liveWorker(options.signal);
      const answer = worker.request("generate", prepared.params, {
        payload: prepared.payload,
        signal: options.signal,
        timeoutMs: options.timeoutMs,
        onEvent: onDelta && ((event) => event.event === "token" && onDelta(event.data)),
      });
      sent();
      return await answer;
    } finally {
      sent();
      this.#inFlight--;
    }
  }

  // The worker, replaced first if it crashed (once, however many calls are waiting) and restarts are on.
  async #liveWorker(signal?: AbortSignal): Promise<WorkerProcess> {
    if (this.#closed) throw new ClosedError();
    const failure = this.#worker.failure;
    if (!failure) return this.#worker;
    if (!this.#settings.restartOnCrash || !(failure instanceof WorkerCrashedError)) throw failure;
    this.#restarting ??= this.#restart().finally(() => (this.#restarting = undefined));
    await (signal ? raceAbort(this.#restarting, signal) : this.#restarting);
    if (this.#closed) throw new ClosedError();
    return this.#worker;
  }

  async #restart(): Promise<void> {
    const { launch, params } = this.#settings;
    const report = stampedListener(this.#settings.onProgress);
    report?.({ type: "stage", stage: "restart", message: `The worker crashed; starting a new one and loading ${params.model} again` });
    const { worker, info } = await startLoadedWorker(launch, params, { ...this.#settings, onProgress: report });
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
    const worker = await this.#liveWorker(options.signal);
    return worker.request("info", {}, options);
  }

  /**
   * Gives back what the fast decoder holds between requests (its KV cache and captured CUDA graphs), so an idle
   * model keeps only its weights. Waits for running generations to finish first; the next request regrows the
   * cache. With the reference decoder there is nothing to free and it reports 0.
   */
  async releaseMemory(options: { signal?: AbortSignal } = {}): Promise<ReleaseMemoryResult> {
    const worker = await this.#liveWorker(options.signal);
    return worker.request("releaseMemory", {}, options);
  }

  /** Ends the worker and frees the model; pending calls reject with ClosedError. Safe to call twice. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#restarting?.catch(() => undefined);
    await this.#worker.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

interface Settings {
  launch: WorkerLaunch;
  params: LoadParams;
  imageLimits: ImageLimits;
  startupTimeoutMs: number;
  restartOnCrash: boolean;
  maxQueue: number;
  onStderr: ((line: string) => void) | undefined;
  onProgress: ((event: LoadProgress) => void) | undefined;
}

// Rejects with AbortError when the signal fires first; the promise itself runs on.
function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new AbortError(signal.reason));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new AbortError(signal.reason));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
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

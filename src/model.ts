import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { AbortError, ClosedError } from "./errors.js";
import { checkBitsandbytes } from "./runtime/check-bitsandbytes.js";
import { LoadOptions, type ImageLimits, type ResolvedLoadOptions } from "./options.js";
import type { LoadParams, LoadResult, GenerateResult, InfoResult, TokenEventData } from "./protocol/messages.js";
import { ensurePythonEnvironment, type PythonEnvironment } from "./runtime/python-environment.js";
import { workerCommand } from "./runtime/worker-command.js";
import { WorkerProcess } from "./worker/worker-process.js";
import { GenerationStream } from "./generation-stream.js";
import { prepareGeneration, type GenerateCallOptions } from "./prepare-generation.js";
import { parseOrThrow } from "./parse-or-throw.js";
import type { Messages } from "./messages.js";

export type GenerationResult = GenerateResult;
export type ModelInfo = LoadResult;

/** What load() reports while it works: environment set-up, worker start, model load. */
export interface LoadProgress {
  stage: string;
  message: string;
}

export interface LoadCallOptions {
  signal?: AbortSignal;
  onProgress?: (event: LoadProgress) => void;
  /** The worker's stderr, line by line (transformers warnings and the like). */
  onStderr?: (line: string) => void;
}

/** An Idefics2 model held by a Python worker. Create with `Idefics2.load()`, end with `close()` or `await using`. */
export class Idefics2 {
  /** What the worker loaded: device, dtype, quantization, image settings, load time. */
  readonly info: ModelInfo;
  readonly environment: PythonEnvironment;
  #worker: WorkerProcess;
  #imageLimits: ImageLimits;
  #closed = false;

  private constructor(worker: WorkerProcess, info: ModelInfo, environment: PythonEnvironment, imageLimits: ImageLimits) {
    this.#worker = worker;
    this.info = info;
    this.environment = environment;
    this.#imageLimits = imageLimits;
  }

  /** Finds or creates the Python environment, starts a worker and loads the model into it. */
  static async load(options: LoadOptions & LoadCallOptions = {}): Promise<Idefics2> {
    const { signal, onProgress, onStderr, ...rest } = options;
    const resolved = parseOrThrow(LoadOptions, rest, "INVALID_OPTIONS", "load option");
    if (signal?.aborted) throw new AbortError(signal.reason);

    const environment = await ensurePythonEnvironment({
      python: resolved.python,
      home: resolved.home,
      signal,
      onProgress: (event) => onProgress?.({ stage: event.stage, message: event.message }),
    });
    const quantization = typeof resolved.quantization === "string" ? resolved.quantization : resolved.quantization.mode;
    if (quantization !== "none") {
      const missing = checkBitsandbytes(environment.versions, environment.python);
      if (missing) throw missing;
    }

    onProgress?.({ stage: "worker", message: `Starting the Python worker (${environment.python})` });
    const worker = await WorkerProcess.start(workerCommand(environment), {
      startupTimeoutMs: resolved.startupTimeoutMs,
      onStderr,
      signal,
    });
    try {
      onProgress?.({ stage: "model", message: `Loading ${resolved.model}` });
      const info = await worker.request("load", loadParams(resolved), {
        signal,
        onEvent: (event) => event.event === "progress" && onProgress?.(event.data),
      });
      return new Idefics2(worker, info, environment, resolved.images);
    } catch (error) {
      await worker.close();
      throw error;
    }
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

  async #run(messages: Messages, options: GenerateCallOptions, onDelta: ((delta: TokenEventData) => void) | undefined): Promise<GenerationResult> {
    this.#assertOpen();
    const prepared = await prepareGeneration(messages, options, this.#imageLimits, onDelta !== undefined);
    return this.#worker.request("generate", prepared.params, {
      payload: prepared.payload,
      signal: options.signal,
      timeoutMs: options.timeoutMs,
      onEvent: onDelta && ((event) => event.event === "token" && onDelta(event.data)),
    });
  }

  /** Versions, CUDA devices and memory as the worker sees them. */
  async workerInfo(options: { signal?: AbortSignal } = {}): Promise<InfoResult> {
    this.#assertOpen();
    return this.#worker.request("info", {}, options);
  }

  /** Ends the worker and frees the model; pending calls reject with ClosedError. Safe to call twice. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#worker.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError();
    const failure = this.#worker.failure;
    if (failure) throw failure;
  }
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
  };
}

import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { AbortError, ClosedError, InvalidInputError, QueueFullError, TimeoutError } from "./errors.js";
import { checkBitsandbytes } from "./runtime/check-bitsandbytes.js";
import { LoadOptions, type ImageLimits, type ResolvedLoadOptions } from "./options.js";
import type { LoadParams, LoadResult, GenerateResult, InfoResult, ReleaseMemoryResult, TokenEventData } from "./protocol/messages.js";
import type { ReplicaDevice } from "./protocol/option-ranges.js";
import { ensurePythonEnvironment, type PythonEnvironment } from "./runtime/python-environment.js";
import { idefics2Home } from "./runtime/idefics2-home.js";
import { startBytecodeWarmup, workerBytecode } from "./runtime/worker-bytecode.js";
import { workerCommand } from "./runtime/worker-command.js";
import { checkSignal, MAX_TIMER_MS } from "./worker/check-call-options.js";
import { checkRequestSize } from "./worker/check-request-size.js";
import { contained } from "./worker/contained.js";
import { cudaDevices } from "./pool/cuda-devices.js";
import { timedOut, within } from "./pool/deadline.js";
import type { ReplicaSettings } from "./pool/replica.js";
import { ReplicaPool, type ReplicaStatus } from "./pool/replica-pool.js";
import { type GenerationStream, streamOf } from "./generation-stream.js";
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
export type { ReplicaState, ReplicaStatus } from "./pool/replica-pool.js";

/** What `releaseMemory()` gave back: every replica's together, and each one's. */
export interface ReleasedMemory extends ReleaseMemoryResult {
  /** Each replica's release, in `replicas` order (one entry for a model of one worker). */
  replicas: ReleaseMemoryResult[];
}

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

/**
 * An Idefics2 model held by a Python worker, or by one worker per device (`devices`). Create with `Idefics2.load()`,
 * end with `close()` or `await using`.
 */
export class Idefics2 {
  readonly environment: PythonEnvironment;
  readonly #pool: ReplicaPool;
  #settings: Settings;
  #inFlight = 0;
  #sendOrder: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(pool: ReplicaPool, environment: PythonEnvironment, settings: Settings) {
    this.#pool = pool;
    this.environment = environment;
    this.#settings = settings;
  }

  /**
   * Finds or creates the Python environment, starts a worker and loads the model into it; with `devices`, one
   * worker per device, all loading at once (if one fails, the others are stopped and load() rejects with its error).
   */
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
    const devices: readonly ReplicaDevice[] | undefined =
      resolved.devices === "all"
        ? await cudaDevices(environment, { signal, timeoutMs: Math.min(PROBE_TIMEOUT_MS, resolved.startupTimeoutMs) })
        : resolved.devices;
    const bytecode = workerBytecode(environment.python, environment.versions, idefics2Home(resolved.home));
    const common: Omit<ReplicaSettings, "params"> = {
      launch: workerCommand(environment, process.env, bytecode),
      startupTimeoutMs: resolved.startupTimeoutMs,
      loadTimeoutMs: resolved.loadTimeoutMs,
      restartOnCrash: resolved.restartOnCrash,
      onStderr,
      onProgress,
    };
    const params = loadParams(resolved);
    const replicas = (devices ?? [params.deviceMap]).map((deviceMap) => ({ ...common, params: { ...params, deviceMap } }));
    const pool = await ReplicaPool.start(replicas, { signal, onProgress: report });
    if (bytecode && !bytecode.warm) startBytecodeWarmup(environment, bytecode);
    return new Idefics2(pool, environment, { imageLimits: resolved.images, maxQueue: resolved.maxQueue });
  }

  /** What the worker loaded: device, dtype, quantization, image settings, load time. With `devices`, the first worker's. */
  get info(): ModelInfo {
    return this.#pool.first.info;
  }

  /** The worker's process id; it changes when a crashed worker is replaced. With `devices`, the first worker's. */
  get workerPid(): number {
    return this.#pool.first.pid;
  }

  /** How many times a crashed worker has been replaced (with `devices`, all workers' together). */
  get restarts(): number {
    return this.#pool.restarts;
  }

  /**
   * Each worker as it is now: its device, state, pid, calls in flight and routed to it, restarts and load info. One
   * entry without `devices`.
   */
  get replicas(): ReplicaStatus[] {
    return this.#pool.status();
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
    return streamOf(given, (onDelta, stop) => this.#run(messages, given, { onDelta, stop }) as Promise<StructuredResult<O>>);
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
        streamOf(turnOptions, (onDelta, stop) => this.#run(messages, turnOptions, { ...extras, onDelta, stop })),
      () => this.info.maxContext,
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
      checkRequestSize(prepared.params, prepared.payloadBytes);
      // The call's timeoutMs runs from the call: it covers waiting for earlier calls and for a worker's restart.
      const timeoutMs = options.timeoutMs;
      const deadline = timeoutMs === undefined || timeoutMs > MAX_TIMER_MS ? undefined : { started, timeoutMs };
      await within(earlier, signal, deadline);
      // The least loaded worker that is up; a call on a worker that crashes rejects with WorkerCrashedError.
      const { worker, release } = await this.#pool.acquire(signal, deadline);
      try {
        const answer = worker.request("generate", prepared.params, {
          payload: prepared.payload,
          signal,
          timeoutMs: deadline && Math.max(1, Math.ceil(deadline.started + deadline.timeoutMs - performance.now())),
          onEvent: onDelta && ((event) => event.event === "token" && onDelta(event.data)),
        });
        sent();
        const result = await answer;
        // A structured answer's text becomes `object`, or a StructuredOutputError (never a half object).
        return prepared.structure ? prepared.structure.finish(result) : result;
      } catch (error) {
        // The worker got what was left of the call's time; the caller hears of the time it gave.
        if (error instanceof TimeoutError && deadline) throw timedOut(deadline);
        throw error;
      } finally {
        release();
      }
    } finally {
      sent();
      this.#inFlight--;
    }
  }

  /**
   * Versions, CUDA devices and memory as the worker sees them; with `devices`, those of the worker at `replica`
   * (an index into `replicas`, default 0).
   */
  async workerInfo(options: { signal?: AbortSignal; replica?: number } = {}): Promise<InfoResult> {
    const signal = checkSignal(options?.signal);
    if (this.#closed) throw new ClosedError();
    const index = options?.replica ?? 0;
    const replica = Number.isInteger(index) ? this.#pool.at(index) : undefined;
    if (!replica)
      throw new InvalidInputError(
        "INVALID_OPTIONS",
        `Invalid workerInfo option: \`replica\` must be an index below ${this.#pool.size} (got ${String(index)})`,
        {
          fix: "Pick an index of `model.replicas`.",
        },
      );
    const worker = await replica.liveWorker(signal);
    return worker.request("info", {}, { signal });
  }

  /**
   * Gives back what the fast decoder holds between requests (its KV cache and captured CUDA graphs), so an idle
   * model keeps only its weights. Waits for running generations to finish first; the next request regrows the
   * cache. With the reference decoder there is nothing to free and it reports 0. With `devices`, every worker
   * releases: `freedKvCacheBytes` is their sum, `memory` the first one's, `replicas` each one's.
   */
  async releaseMemory(options: { signal?: AbortSignal } = {}): Promise<ReleasedMemory> {
    const signal = checkSignal(options?.signal);
    if (this.#closed) throw new ClosedError();
    const released = await Promise.all(
      this.#pool.status().map(async ({ index }) => {
        const worker = await this.#pool.at(index)?.liveWorker(signal);
        if (!worker) throw new ClosedError();
        return worker.request("releaseMemory", {}, { signal });
      }),
    );
    const [first] = released;
    if (!first) throw new ClosedError();
    const freedKvCacheBytes = released.reduce((sum, one) => sum + one.freedKvCacheBytes, 0);
    return { freedKvCacheBytes, memory: first.memory, replicas: released };
  }

  /**
   * Ends the worker and frees the model; pending calls reject with ClosedError. A restart under way is stopped and
   * its worker killed. Safe to call twice; always settles, with the worker gone.
   */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#pool.close();
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

/** What a model's calls need beyond its workers. */
interface Settings {
  imageLimits: ImageLimits;
  /** Generations queued or running at once, over all workers. */
  maxQueue: number;
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
    maxMemory: options.maxMemory ?? null,
    deterministic: options.deterministic,
  };
}

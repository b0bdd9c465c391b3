import { execa, type ResultPromise } from "execa";
import {
  AbortError,
  ClosedError,
  errorForCode,
  Idefics2Error,
  ProtocolError,
  TimeoutError,
  WorkerCrashedError,
} from "../errors.js";
import { encodeFrame, FrameDecoder } from "../protocol/frame-codec.js";
import {
  type EventFrame,
  InboundFrame,
  knownErrorCode,
  methods,
  type MethodName,
  type ParamsOf,
  PROTOCOL_VERSION,
  type ResultOf,
  type WorkerErrorPayload,
  type WorkerVersions,
} from "../protocol/messages.js";
import { StderrTail } from "./stderr-tail.js";

export interface WorkerLaunch {
  file: string;
  args: string[];
  env: Record<string, string>;
  cwd?: string;
}

export interface WorkerStartOptions {
  /** How long to wait for the worker's `ready` frame (Python imports torch first). */
  startupTimeoutMs?: number;
  /** Receives the worker's stderr (warnings, logs) line by line; the package never prints it. */
  onStderr?: (line: string) => void;
  signal?: AbortSignal;
}

export interface RequestOptions {
  payload?: Uint8Array;
  signal?: AbortSignal | undefined;
  timeoutMs?: number | undefined;
  onEvent?: ((event: EventFrame) => void) | undefined;
}

interface Pending {
  method: MethodName;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  onEvent: ((event: EventFrame) => void) | undefined;
  settle: () => void;
}

const TERMINATE_GRACE_MS = 2_000;
const SHUTDOWN_GRACE_MS = 5_000;

/** One Python worker process: frames over stdio, many concurrent requests, cancellation, crash reporting. */
export class WorkerProcess {
  pid = 0;
  versions: Partial<WorkerVersions> = {};
  #subprocess: ResultPromise;
  #decoder = new FrameDecoder();
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #stderr: StderrTail;
  #exit: Promise<void>;
  #failure: Idefics2Error | undefined;
  #closing = false;
  #ready = deferred();

  private constructor(subprocess: ResultPromise, stderr: StderrTail) {
    this.#subprocess = subprocess;
    this.#stderr = stderr;
    subprocess.stderr?.on("data", (chunk: Buffer) => stderr.push(chunk));
    subprocess.stdout?.on("data", (chunk: Buffer) => this.#onData(chunk));
    subprocess.stdin?.on("error", () => {
      // EPIPE after the worker died: the exit handler reports the crash.
    });
    this.#exit = subprocess.then((result) => this.#onExit(result.exitCode ?? null, result.signal ?? null));
  }

  /** Spawns the worker (no shell, explicit environment) and resolves once it has said `ready`. */
  static async start(launch: WorkerLaunch, options: WorkerStartOptions = {}): Promise<WorkerProcess> {
    const { startupTimeoutMs = 180_000, onStderr, signal } = options;
    if (signal?.aborted) throw new AbortError(signal.reason);
    const subprocess = execa(launch.file, launch.args, {
      env: launch.env,
      extendEnv: false,
      cwd: launch.cwd,
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
      buffer: false,
      reject: false,
      encoding: "buffer",
      // Closing stdin is our shutdown signal; execa's own cleanup still kills the worker if Node exits abruptly.
      cleanup: true,
    });
    const worker = new WorkerProcess(subprocess, new StderrTail(onStderr));
    const onAbort = () => worker.#fail(new AbortError(signal?.reason));
    const timer = setTimeout(
      () => worker.#fail(new TimeoutError("TIMED_OUT", `The Python worker did not start within ${startupTimeoutMs} ms`, { fix: "Run `idefics2 doctor`." })),
      startupTimeoutMs,
    );
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await worker.#ready.promise;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
    worker.#updateRef();
    return worker;
  }

  /** True until the worker exits or is closed. */
  get alive(): boolean {
    return this.#failure === undefined && !this.#closing;
  }

  /** The error every call gets once the worker has died, if it has. */
  get failure(): Idefics2Error | undefined {
    return this.#failure;
  }

  get pendingCount(): number {
    return this.#pending.size;
  }

  /** Sends one request; resolves with its zod-checked result, rejects with a typed error. */
  request<M extends MethodName>(method: M, params: ParamsOf<M>, options: RequestOptions = {}): Promise<ResultOf<M>> {
    const { payload, signal, timeoutMs, onEvent } = options;
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#closing) return Promise.reject(new ClosedError("The worker"));
    if (signal?.aborted) return Promise.reject(new AbortError(signal.reason));

    const id = this.#nextId++;
    return new Promise<ResultOf<M>>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => this.#cancel(id, new AbortError(signal?.reason));
      const settle = () => {
        signal?.removeEventListener("abort", onAbort);
        if (timer) clearTimeout(timer);
        this.#pending.delete(id);
        this.#updateRef();
      };
      this.#pending.set(id, {
        method,
        resolve: (value) => resolve(value as ResultOf<M>),
        reject,
        onEvent,
        settle,
      });
      signal?.addEventListener("abort", onAbort, { once: true });
      if (timeoutMs !== undefined) {
        timer = setTimeout(
          () => this.#cancel(id, new TimeoutError("TIMED_OUT", `The ${method} call timed out after ${timeoutMs} ms`)),
          timeoutMs,
        );
      }
      this.#updateRef();
      this.#write(encodeFrame({ type: "request", id, method, params }, payload));
    });
  }

  /**
   * Ends the worker: rejects pending calls with ClosedError, asks it to shut down (end of stdin),
   * then SIGTERM after a grace period, then SIGKILL. Safe to call more than once.
   */
  async close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      this.#rejectAll(new ClosedError("The worker"));
      if (!this.#failure) {
        this.#write(encodeFrame({ type: "shutdown" }));
        this.#subprocess.stdin?.end();
      }
      this.#subprocess.ref?.();
      await escalate(this.#subprocess, this.#exit);
    }
    await this.#exit;
  }

  #cancel(id: number, error: Idefics2Error): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    pending.settle();
    pending.reject(error);
    if (this.alive) this.#write(encodeFrame({ type: "cancel", id }));
  }

  #write(frame: Buffer): void {
    const stdin = this.#subprocess.stdin;
    if (stdin && !stdin.destroyed && stdin.writable) stdin.write(frame);
  }

  #onData(chunk: Buffer): void {
    let frames;
    try {
      frames = this.#decoder.push(chunk);
    } catch (error) {
      this.#fail(error instanceof Idefics2Error ? error : new ProtocolError("PROTOCOL_ERROR", String(error)));
      return;
    }
    for (const frame of frames) this.#onFrame(frame.header);
  }

  #onFrame(header: unknown): void {
    const parsed = InboundFrame.safeParse(header);
    if (!parsed.success) {
      this.#fail(new ProtocolError("PROTOCOL_ERROR", `The worker sent a frame that is not the protocol: ${JSON.stringify(header).slice(0, 200)}`));
      return;
    }
    const frame = parsed.data;
    if (frame.type === "ready") {
      if (frame.protocol !== PROTOCOL_VERSION) {
        this.#fail(
          new ProtocolError("PROTOCOL_ERROR", `The worker speaks protocol ${frame.protocol}, this SDK ${PROTOCOL_VERSION}`, {
            fix: "The worker package and the SDK come from different versions; reinstall idefics2.",
          }),
        );
        return;
      }
      this.pid = frame.pid;
      this.versions = frame.versions;
      this.#ready.resolve();
      return;
    }
    if (frame.type === "error" && frame.id === null) {
      this.#fail(workerError(frame.error));
      return;
    }
    const pending = this.#pending.get(frame.id as number);
    // Frames for calls already aborted or timed out on this side are expected and dropped.
    if (!pending) return;
    if (frame.type === "event") {
      pending.onEvent?.(frame);
    } else if (frame.type === "result") {
      const result = methods[pending.method].result.safeParse(frame.result);
      pending.settle();
      if (result.success) pending.resolve(result.data);
      else pending.reject(new ProtocolError("PROTOCOL_ERROR", `The worker's ${pending.method} result does not match its schema: ${result.error.message}`));
    } else {
      pending.settle();
      pending.reject(workerError(frame.error));
    }
  }

  #onExit(exitCode: number | null, signal: string | null): void {
    if (this.#closing) {
      this.#rejectAll(new ClosedError("The worker"));
      return;
    }
    this.#failure ??= new WorkerCrashedError({ exitCode, signal, stderrTail: this.#stderr.text() });
    this.#ready.reject(this.#failure);
    this.#rejectAll(this.#failure);
  }

  #fail(error: Idefics2Error): void {
    this.#failure ??= error;
    this.#ready.reject(error);
    this.#rejectAll(error);
    killTree(this.#subprocess, "SIGKILL");
  }

  #rejectAll(error: Error): void {
    for (const pending of [...this.#pending.values()]) {
      pending.settle();
      pending.reject(error);
    }
  }

  // An idle worker must not keep Node alive: a program that forgot close() still exits (execa's cleanup kills it).
  #updateRef(): void {
    const busy = this.#pending.size > 0;
    const subprocess = this.#subprocess;
    for (const handle of [subprocess, subprocess.stdout, subprocess.stderr, subprocess.stdin] as const) {
      const refHandle = handle as unknown as { ref?: () => void; unref?: () => void; destroyed?: boolean } | null;
      // A destroyed socket has no handle: its ref()/unref() would queue a 'connect' listener that never fires.
      if (refHandle?.destroyed) continue;
      if (busy) refHandle?.ref?.();
      else refHandle?.unref?.();
    }
  }
}

// Node 20 has no Promise.withResolvers.
function deferred(): { promise: Promise<void>; resolve: () => void; reject: (error: Error) => void } {
  let resolve!: () => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {
    // Observed by start(); a late rejection after `ready` must not become an unhandled rejection.
  });
  return { promise, resolve, reject };
}

function workerError(payload: WorkerErrorPayload): Idefics2Error {
  return errorForCode(knownErrorCode(payload.code), payload.message, {
    fix: payload.fix ?? undefined,
    pythonType: payload.pythonType ?? undefined,
    pythonTraceback: payload.traceback ?? undefined,
  });
}

// stdin end first (the worker exits on EOF), then SIGTERM, then SIGKILL.
async function escalate(subprocess: ResultPromise, exit: Promise<void>): Promise<void> {
  const exited = (ms: number) =>
    Promise.race([exit.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms).unref())]);
  if (await exited(SHUTDOWN_GRACE_MS)) return;
  killTree(subprocess, "SIGTERM");
  if (await exited(TERMINATE_GRACE_MS)) return;
  killTree(subprocess, "SIGKILL");
}

// The worker leads its own process group (python/idefics2_worker/__main__.py): signal the group, so anything
// it started ends with it; where it does not lead one (Windows, or a fixture), signal the process alone.
function killTree(subprocess: ResultPromise, signal: NodeJS.Signals): void {
  const pid = subprocess.pid;
  if (pid !== undefined && process.platform !== "win32") {
    try {
      process.kill(-pid, signal);
      return;
    } catch {
      // No such group: fall through to the process itself.
    }
  }
  subprocess.kill(signal);
}

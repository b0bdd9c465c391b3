import { execa } from "execa";
import { AbortError, type Idefics2Error, TimeoutError, WorkerCrashedError } from "../errors.js";
import type { MethodName, ParamsOf, ResultOf, WorkerVersions } from "../protocol/messages.js";
import { MAX_TIMER_MS } from "./check-call-options.js";
import { escalate, killTree } from "./kill-tree.js";
import { OWN_PROCESS_GROUP, reapProcessGroup } from "./process-group.js";
import { StderrTail } from "./stderr-tail.js";
import { type RequestOptions, WorkerConnection } from "./worker-connection.js";

export type { RequestOptions } from "./worker-connection.js";

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

/** One Python worker process: a WorkerConnection over its stdio, with crash reporting and shutdown. */
export class WorkerProcess {
  pid = 0;
  versions: Partial<WorkerVersions> = {};
  #subprocess: WorkerSubprocess;
  #connection: WorkerConnection;
  #stderr: StderrTail;
  #exit: Promise<void>;
  #closing: Promise<void> | undefined;

  private constructor(subprocess: WorkerSubprocess, stderr: StderrTail) {
    this.#subprocess = subprocess;
    this.#stderr = stderr;
    subprocess.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
    this.#connection = new WorkerConnection(subprocess.stdout, subprocess.stdin, {
      onFailure: () => killTree(subprocess, "SIGKILL"),
      onPendingChange: () => this.#updateRef(),
    });
    subprocess.stdin.on("error", () => {
      // EPIPE after the worker died: the exit handler reports the crash.
    });
    this.#exit = subprocess.then((result) => this.#onExit(result.exitCode ?? null, result.signal ?? null));
    reapProcessGroup(subprocess);
  }

  /** Spawns the worker (no shell, explicit environment) and resolves once it has said `ready`. */
  static async start(launch: WorkerLaunch, options: WorkerStartOptions = {}): Promise<WorkerProcess> {
    const { startupTimeoutMs = 180_000, onStderr, signal } = options;
    if (signal?.aborted) throw new AbortError(signal.reason);
    const subprocess = spawnWorker(launch);
    const worker = new WorkerProcess(subprocess, new StderrTail(onStderr));
    const onAbort = () => worker.#fail(new AbortError(signal?.reason));
    const timer = setTimeout(
      () =>
        worker.#fail(
          new TimeoutError("TIMED_OUT", `The Python worker did not start within ${startupTimeoutMs} ms`, { fix: "Run `idefics2 doctor`." }),
        ),
      Math.min(startupTimeoutMs, MAX_TIMER_MS),
    );
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const hello = await worker.#connection.ready;
      worker.pid = hello.pid;
      worker.versions = hello.versions;
    } catch (error) {
      // Whatever went wrong (no ready in time, an abort, bytes that are not frames), the process tree ends first.
      await worker.terminate();
      throw error;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
    worker.#updateRef();
    return worker;
  }

  /** True until the worker exits or is closed. */
  get alive(): boolean {
    return this.#connection.open;
  }

  /** The error every call gets once the worker has died, if it has. */
  get failure(): Idefics2Error | undefined {
    return this.#connection.failure;
  }

  /** Sends one request; resolves with its zod-checked result, rejects with a typed error. */
  request<M extends MethodName>(method: M, params: ParamsOf<M>, options: RequestOptions = {}): Promise<ResultOf<M>> {
    return this.#connection.request(method, params, options);
  }

  /**
   * Ends the worker: rejects pending calls with ClosedError, asks it to shut down (end of stdin),
   * then SIGTERM after a grace period, then SIGKILL. Safe to call more than once.
   */
  async close(): Promise<void> {
    this.#closing ??= this.#shutDown();
    await this.#closing;
  }

  /**
   * Ends the worker at once: pending calls reject with ClosedError and its whole process group gets SIGKILL. For a
   * worker that cannot be trusted to shut down (stopped, stuck in a load past its time). Resolves once it has exited.
   */
  async terminate(): Promise<void> {
    this.#closing ??= (async () => {
      try {
        this.#connection.close();
      } finally {
        killTree(this.#subprocess, "SIGKILL");
        await this.#exited();
      }
    })();
    await this.#closing;
  }

  async #shutDown(): Promise<void> {
    try {
      this.#connection.close();
    } finally {
      // Held until the worker has gone, so a program that awaits close() does not exit half-way through it.
      this.#subprocess.ref?.();
      await escalate(this.#subprocess, this.#exit);
      await this.#exited();
    }
  }

  // The exit, once the process has ended and its pipes have closed. Something that escaped its group (a daemon it
  // started) may hold the pipes open for ever: after a grace period they are closed from this side.
  async #exited(): Promise<void> {
    const graceful = await Promise.race([this.#exit.then(() => true), delay(PIPE_GRACE_MS).then(() => false)]);
    if (graceful) return;
    for (const stream of [this.#subprocess.stdin, this.#subprocess.stdout, this.#subprocess.stderr]) stream.destroy();
    await this.#exit;
  }

  #onExit(exitCode: number | null, signal: string | null): void {
    // After close() every call has already been rejected with ClosedError.
    if (this.#closing) return;
    this.#connection.fail(new WorkerCrashedError({ exitCode, signal, stderrTail: this.#stderr.text() }));
  }

  #fail(error: Idefics2Error): void {
    this.#connection.fail(error);
    killTree(this.#subprocess, "SIGKILL");
  }

  // An idle worker must not keep Node alive: a program that forgot close() still exits (reapProcessGroup ends it).
  #updateRef(): void {
    const busy = this.#connection.pendingCount > 0;
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

// No shell and an explicit environment; the three streams piped as bytes, which also fixes their types below.
function spawnWorker(launch: WorkerLaunch) {
  return execa(launch.file, launch.args, {
    env: launch.env,
    extendEnv: false,
    cwd: launch.cwd,
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
    buffer: false,
    reject: false,
    encoding: "buffer",
    // Its own process group, so that ending it ends everything it started (reapProcessGroup also ends that group if
    // Node exits first, which execa's cleanup no longer does for it). Closing stdin is our shutdown signal.
    detached: OWN_PROCESS_GROUP,
    cleanup: true,
  });
}

type WorkerSubprocess = ReturnType<typeof spawnWorker>;

const PIPE_GRACE_MS = 2_000;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

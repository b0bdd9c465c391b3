import { TimeoutError } from "../errors.js";
import { type LoadProgress, workerLoadStage } from "../load-progress.js";
import type { Unstamped } from "../progress-event.js";
import type { LoadParams, LoadResult } from "../protocol/messages.js";
import { contained } from "./contained.js";
import { WorkerProcess, type WorkerLaunch } from "./worker-process.js";

export interface StartLoadedWorkerOptions {
  /** How long the worker may take to say `ready`. */
  startupTimeoutMs: number;
  /** How long the whole of it may take: the worker's start and the model's load together. */
  loadTimeoutMs: number;
  signal?: AbortSignal | undefined;
  onStderr?: ((line: string) => void) | undefined;
  onProgress?: ((event: Unstamped<LoadProgress>) => void) | undefined;
}

/**
 * Starts a worker and loads the model into it, within `loadTimeoutMs` in all. A worker whose load fails is closed
 * before the error is thrown; one whose load runs out of time or is aborted is killed with its process group, since
 * a load cannot be interrupted (and the worker may be stuck or stopped).
 */
export async function startLoadedWorker(
  launch: WorkerLaunch,
  params: LoadParams,
  options: StartLoadedWorkerOptions,
): Promise<{ worker: WorkerProcess; info: LoadResult }> {
  const { startupTimeoutMs, loadTimeoutMs, signal, onStderr } = options;
  const onProgress = contained(options.onProgress);
  const deadline = performance.now() + loadTimeoutMs;
  const tooLate = () =>
    new TimeoutError("TIMED_OUT", `The model did not load within ${loadTimeoutMs} ms (loadTimeoutMs)`, {
      fix: "Raise `loadTimeoutMs` (a first load may download the weights), or check the environment with `idefics2 doctor`.",
    });
  onProgress?.({ type: "stage", stage: "worker", message: `Starting the Python worker (${launch.file})` });
  let worker: WorkerProcess;
  try {
    worker = await WorkerProcess.start(launch, { startupTimeoutMs: Math.min(startupTimeoutMs, loadTimeoutMs), onStderr, signal });
  } catch (error) {
    throw error instanceof TimeoutError && loadTimeoutMs < startupTimeoutMs ? tooLate() : error;
  }
  try {
    onProgress?.({ type: "stage", stage: "model", message: `Loading ${params.model}` });
    const info = await worker.request("load", params, {
      signal,
      timeoutMs: Math.max(1, Math.ceil(deadline - performance.now())),
      onEvent: (event) => {
        if (event.event !== "progress") return;
        const { stage, message, done, total, unit } = event.data;
        onProgress?.(
          done !== undefined && unit !== undefined
            ? { type: "progress", stage: workerLoadStage(stage), message, done, unit, ...(total === undefined ? {} : { total }) }
            : { type: "stage", stage: workerLoadStage(stage), message },
        );
      },
    });
    return { worker, info };
  } catch (error) {
    const timedOut = error instanceof TimeoutError;
    if (timedOut || signal?.aborted) await worker.terminate();
    else await worker.close();
    throw timedOut ? tooLate() : error;
  }
}

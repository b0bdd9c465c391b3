import { type LoadProgress, workerLoadStage } from "../load-progress.js";
import type { Unstamped } from "../progress-event.js";
import type { LoadParams, LoadResult } from "../protocol/messages.js";
import { WorkerProcess, type WorkerLaunch } from "./worker-process.js";

export interface StartLoadedWorkerOptions {
  startupTimeoutMs: number;
  signal?: AbortSignal | undefined;
  onStderr?: ((line: string) => void) | undefined;
  onProgress?: ((event: Unstamped<LoadProgress>) => void) | undefined;
}

/** Starts a worker and loads the model into it; a worker whose load fails is closed before the error is thrown. */
export async function startLoadedWorker(
  launch: WorkerLaunch,
  params: LoadParams,
  options: StartLoadedWorkerOptions,
): Promise<{ worker: WorkerProcess; info: LoadResult }> {
  const { startupTimeoutMs, signal, onStderr, onProgress } = options;
  onProgress?.({ type: "stage", stage: "worker", message: `Starting the Python worker (${launch.file})` });
  const worker = await WorkerProcess.start(launch, { startupTimeoutMs, onStderr, signal });
  try {
    onProgress?.({ type: "stage", stage: "model", message: `Loading ${params.model}` });
    const info = await worker.request("load", params, {
      signal,
      onEvent: (event) =>
        event.event === "progress" &&
        onProgress?.({ type: "stage", stage: workerLoadStage(event.data.stage), message: event.data.message }),
    });
    return { worker, info };
  } catch (error) {
    await worker.close();
    throw error;
  }
}

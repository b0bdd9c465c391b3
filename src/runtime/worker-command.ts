import { pythonModuleCommand, type PythonModuleCommand } from "./python-module-command.js";

/** How to start the worker: a file to execute without a shell, its arguments, and its whole environment. */
export type WorkerCommand = PythonModuleCommand;

/**
 * The launch spec of `python -m idefics2_worker` for an environment: PYTHONPATH at the package's python/
 * folder, unbuffered UTF-8 stdio, and only the parent variables the worker needs (PATH, HOME, HF_*, CUDA_*, …).
 */
export function workerCommand(environment: { python: string; source?: string }, parentEnv: NodeJS.ProcessEnv = process.env): WorkerCommand {
  return pythonModuleCommand(environment, "idefics2_worker", [], parentEnv);
}

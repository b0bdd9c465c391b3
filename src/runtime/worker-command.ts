import path from "node:path";
import { childEnvironment } from "./child-environment.js";
import { packageRoot } from "./package-root.js";

/** How to start the worker: a file to execute without a shell, its arguments, and its whole environment. */
export interface WorkerCommand {
  file: string;
  args: string[];
  env: Record<string, string>;
}

/**
 * The launch spec of `python -m idefics2_worker` for an environment: PYTHONPATH at the package's python/
 * folder, unbuffered UTF-8 stdio, and only the parent variables the worker needs (PATH, HOME, HF_*, CUDA_*, …).
 */
export function workerCommand(
  environment: { python: string; source?: string },
  parentEnv: NodeJS.ProcessEnv = process.env,
): WorkerCommand {
  const env = childEnvironment("worker", parentEnv);
  // An interpreter the user brings may find its packages through their PYTHONPATH; the managed one never does.
  const inherited = environment.source !== undefined && environment.source !== "managed" ? parentEnv.PYTHONPATH : undefined;
  env.PYTHONPATH = [path.join(packageRoot(), "python"), ...(inherited ? [inherited] : [])].join(path.delimiter);
  return { file: environment.python, args: ["-m", "idefics2_worker"], env };
}

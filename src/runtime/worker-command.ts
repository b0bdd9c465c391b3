import { pythonModuleCommand, type PythonModuleCommand } from "./python-module-command.js";
import type { WorkerBytecode } from "./worker-bytecode.js";

/** How to start the worker: a file to execute without a shell, its arguments, and its whole environment. */
export type WorkerCommand = PythonModuleCommand;

/**
 * The launch spec of `python -m idefics2_worker` for an environment: PYTHONPATH at the package's python/
 * folder, unbuffered UTF-8 stdio, and only the parent variables the worker needs (PATH, HOME, HF_*, CUDA_*, …).
 * With `bytecode` (`workerBytecode`): reading and writing bytecode in its folder once it is warm, else listing the
 * sources it imports for the warm-up.
 */
export function workerCommand(
  environment: { python: string; source?: string },
  parentEnv: NodeJS.ProcessEnv = process.env,
  bytecode?: WorkerBytecode,
): WorkerCommand {
  const command = pythonModuleCommand(
    { ...environment, bytecodeFolder: bytecode?.warm ? bytecode.folder : undefined },
    "idefics2_worker",
    [],
    parentEnv,
  );
  // The variable python/idefics2_worker/bytecode/sources.py reads (SOURCES_VARIABLE).
  if (bytecode && !bytecode.warm) command.env.IDEFICS2_BYTECODE_SOURCES = bytecode.sources;
  return command;
}

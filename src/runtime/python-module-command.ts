import path from "node:path";
import { childEnvironment } from "./child-environment.js";
import { packageRoot } from "./package-root.js";
import { absolutePathEntries, safeModuleArgs, safeWorkingFolder } from "./safe-module-args.js";

/** How to start a Python child: a file to execute without a shell, its arguments, its whole environment and its folder. */
export interface PythonModuleCommand {
  file: string;
  args: string[];
  env: Record<string, string>;
  /** The folder it runs in: the package's python/ folder, never the caller's current one. */
  cwd: string;
}

/**
 * The launch spec of `python -m <module> [args]` for a module of the package's python/ folder (the worker, its
 * probes), run so that no module comes from the current folder (safeModuleArgs, in the python/ folder):
 * PYTHONPATH at that folder, no bytecode written beside any source (with `bytecodeFolder`, all of it kept there
 * instead), unbuffered UTF-8 stdio, and only the parent variables a Python child needs (PATH, HOME, HF_*, CUDA_*, …).
 * @internal
 */
export function pythonModuleCommand(
  environment: { python: string; source?: string | undefined; bytecodeFolder?: string | undefined },
  module: string,
  args: string[] = [],
  parentEnv: NodeJS.ProcessEnv = process.env,
): PythonModuleCommand {
  const env = childEnvironment("worker", parentEnv);
  // An interpreter the user brings may find its packages through their PYTHONPATH; the managed one never does. Only
  // absolute entries: an empty or relative one (`export PYTHONPATH=$PYTHONPATH:/x` makes one) means the current folder.
  const inherited = environment.source !== undefined && environment.source !== "managed" ? absolutePathEntries(parentEnv.PYTHONPATH) : [];
  env.PYTHONPATH = [path.join(packageRoot(), "python"), ...inherited].join(path.delimiter);
  // Never write __pycache__ into the installed package: a read-only install would fail, and tslab's type checker,
  // which watches the package folder, breaks on files appearing there mid-session. An interpreter whose torch and
  // transformers have no bytecode compiles them on every start (most of a 19 s load on the H200 machine, H72): then
  // all bytecode goes to a folder of the SDK's own, which Python reads back on the next start.
  if (environment.bytecodeFolder) env.PYTHONPYCACHEPREFIX = environment.bytecodeFolder;
  else env.PYTHONDONTWRITEBYTECODE = "1";
  return { file: environment.python, args: safeModuleArgs(module, args), env, cwd: safeWorkingFolder() };
}

import path from "node:path";
import { childEnvironment } from "./child-environment.js";
import { packageRoot } from "./package-root.js";

/** How to start a Python child: a file to execute without a shell, its arguments, and its whole environment. */
export interface PythonModuleCommand {
  file: string;
  args: string[];
  env: Record<string, string>;
}

/**
 * The launch spec of `python -m <module> [args]` for a module of the package's python/ folder (the worker, its
 * probes): PYTHONPATH at that folder, no bytecode written, unbuffered UTF-8 stdio, and only the parent variables a Python child needs
 * (PATH, HOME, HF_*, CUDA_*, …). @internal
 */
export function pythonModuleCommand(
  environment: { python: string; source?: string | undefined },
  module: string,
  args: string[] = [],
  parentEnv: NodeJS.ProcessEnv = process.env,
): PythonModuleCommand {
  const env = childEnvironment("worker", parentEnv);
  // An interpreter the user brings may find its packages through their PYTHONPATH; the managed one never does.
  const inherited = environment.source !== undefined && environment.source !== "managed" ? parentEnv.PYTHONPATH : undefined;
  env.PYTHONPATH = [path.join(packageRoot(), "python"), ...(inherited ? [inherited] : [])].join(path.delimiter);
  // Never write __pycache__ into the installed package: a read-only install would fail, and tslab's type checker,
  // which watches the package folder, breaks on files appearing there mid-session.
  env.PYTHONDONTWRITEBYTECODE = "1";
  return { file: environment.python, args: ["-m", module, ...args], env };
}

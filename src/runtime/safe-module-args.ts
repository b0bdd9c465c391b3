import path from "node:path";
import { packageRoot } from "./package-root.js";

// `python -m module` puts the current folder first on sys.path, so an `idefics2_worker/`, `json.py`, `runpy.py`,
// `venv/` or `pip/` there would be imported instead of the real one: code planted in a cloned repository or a
// downloads folder would run. Python's own guards (-P, PYTHONSAFEPATH) need 3.11 and -I also drops the user's site
// packages, so every Python child starts with `-c` and this bootstrap instead, on any version (the probes run on
// Python 2.6 too): `-c` also puts the current folder first, but only once the interpreter has started (site and
// sitecustomize are imported before), so the bootstrap removes it before importing anything, then runs the module
// exactly as `-m` does (runpy._run_module_as_main is what `-m` itself calls).
const BOOTSTRAP =
  'import sys; sys.path[:1] == [""] and sys.path.pop(0); import runpy; del sys.argv[0]; runpy._run_module_as_main(sys.argv[0])';

/** The arguments that run `module` as `python -m module ...args` does, never taking a module from the current folder. @internal */
export function safeModuleArgs(module: string, args: readonly string[] = []): string[] {
  return ["-c", BOOTSTRAP, module, ...args];
}

/**
 * The folder every Python child runs in: the package's own python/ folder, never the caller's current one, so
 * whatever those children start in turn (pip's build steps, venv's ensurepip) does not look for modules there either.
 * Model paths are made absolute before they reach the worker. @internal
 */
export function safeWorkingFolder(): string {
  return path.join(packageRoot(), "python");
}

/** The absolute entries of a PYTHONPATH: an empty or relative one means the current folder, wherever that is. @internal */
export function absolutePathEntries(value: string | undefined): string[] {
  return (value ?? "").split(path.delimiter).filter((entry) => entry !== "" && path.isAbsolute(entry));
}

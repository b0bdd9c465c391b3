import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pythonModuleCommand } from "./python-module-command.js";
import type { PythonVersions } from "./python-versions.js";

/**
 * The bytecode folder of an interpreter whose torch and transformers were never compiled (`PythonVersions.compiled`
 * false: installed with PYTHONDONTWRITEBYTECODE set, or read-only), which would compile them on every start (15-19 s
 * of a load on the H200 machine, H72-H73). Its first worker lists the sources it imported (`sources`); a low-priority
 * process then compiles them into `folder` and writes `marker` (`startBytecodeWarmup`); later workers read them there
 * (PYTHONPYCACHEPREFIX). A first worker that wrote them itself loaded 13 s slower (H74); one reading them, 6.6 s faster
 * than the reference at bf16 (H73). @internal
 */
export interface WorkerBytecode {
  folder: string;
  /** Written once the listed sources are compiled: from then on workers start reading `folder`. */
  marker: string;
  /** Where a worker started before that lists what it imported. */
  sources: string;
  /** Whether `marker` was there when this was made. */
  warm: boolean;
}

/** The bytecode folder for `python` under `home`, or none where pip compiled its packages, as usual. @internal */
export function workerBytecode(python: string, versions: Pick<PythonVersions, "compiled">, home: string): WorkerBytecode | undefined {
  if (versions.compiled !== false) return undefined;
  const folder = path.join(home, "bytecode");
  // One marker per interpreter: another one's site-packages are other sources.
  const key = createHash("sha256").update(python).digest("hex").slice(0, 16);
  const marker = path.join(folder, `warm-${key}.json`);
  return { folder, marker, sources: path.join(folder, `sources-${key}.json`), warm: existsSync(marker) };
}

/**
 * Compiles the sources a worker listed into the bytecode folder, in a child at low priority (19 on Unix) that nothing
 * waits for (`python -m idefics2_worker.bytecode.warm`, its output discarded; it does not keep Node alive). A failure
 * leaves no marker, and the next load lists and tries again. @internal
 */
export function startBytecodeWarmup(environment: { python: string; source?: string }, bytecode: WorkerBytecode): void {
  const command = pythonModuleCommand({ ...environment, bytecodeFolder: bytecode.folder }, "idefics2_worker.bytecode.warm", [
    "--sources",
    bytecode.sources,
    "--marker",
    bytecode.marker,
  ]);
  const child = spawn(command.file, command.args, { cwd: command.cwd, env: command.env, stdio: "ignore", windowsHide: true });
  child.on("error", () => {});
  if (child.pid !== undefined) {
    try {
      os.setPriority(child.pid, os.constants.priority.PRIORITY_LOW);
    } catch {
      // Not permitted here: it runs at normal priority, still beside the worker rather than before it.
    }
  }
  child.unref();
}

import { execa } from "execa";
import { OWN_PROCESS_GROUP, reapProcessGroup } from "../worker/process-group.js";
import { pythonModuleCommand } from "./python-module-command.js";

/** The worker package's environment probes (python/idefics2_worker/probe/), each printing one JSON object. */
export type ProbeName = "versions" | "doctor";

export interface RunProbeOptions {
  signal?: AbortSignal | undefined;
  timeoutMs: number;
  /** The probe's own arguments (the versions probe's `--files`). */
  args?: string[] | undefined;
}

/**
 * Runs `python -m idefics2_worker.probe.<name>` the way the worker is started (nothing from the current folder,
 * PYTHONPATH at python/, the explicit environment), with no stdin. Resolves for a failed, timed-out or aborted run
 * too: the caller reads the result. @internal
 */
export function runProbe(environment: { python: string; source?: string | undefined }, name: ProbeName, options: RunProbeOptions) {
  const command = pythonModuleCommand(environment, `idefics2_worker.probe.${name}`, options.args ?? []);
  const subprocess = execa(command.file, command.args, {
    env: command.env,
    extendEnv: false,
    cwd: command.cwd,
    reject: false,
    stdin: "ignore",
    timeout: options.timeoutMs,
    // A probe that runs out of time is ended at once, with anything it started (its own process group, reaped when
    // it exits): an interpreter that never answers must not keep the probe's pipes, and so the caller, waiting.
    killSignal: "SIGKILL",
    detached: OWN_PROCESS_GROUP,
    ...(options.signal ? { cancelSignal: options.signal } : {}),
  });
  reapProcessGroup(subprocess);
  return subprocess;
}

import { execa } from "execa";
import { pythonModuleCommand } from "./python-module-command.js";

/** The worker package's environment probes (python/idefics2_worker/probe/), each printing one JSON object. */
export type ProbeName = "versions" | "doctor";

export interface RunProbeOptions {
  signal?: AbortSignal | undefined;
  timeoutMs: number;
}

/**
 * Runs `python -m idefics2_worker.probe.<name>` the way the worker is started (PYTHONPATH at python/, the explicit
 * environment), with no stdin. Resolves for a failed, timed-out or aborted run too: the caller reads the result. @internal
 */
export function runProbe(environment: { python: string; source?: string | undefined }, name: ProbeName, options: RunProbeOptions) {
  const command = pythonModuleCommand(environment, `idefics2_worker.probe.${name}`);
  return execa(command.file, command.args, {
    env: command.env,
    extendEnv: false,
    reject: false,
    stdin: "ignore",
    timeout: options.timeoutMs,
    ...(options.signal ? { cancelSignal: options.signal } : {}),
  });
}

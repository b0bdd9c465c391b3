import { execa } from "execa";
import { AbortError, PythonEnvironmentError } from "../errors.js";
import { lastOutputLine } from "../printable.js";
import { childEnvironment } from "./child-environment.js";
import { safeModuleArgs, safeWorkingFolder } from "./safe-module-args.js";
import { emitProgress, type ProgressListener, type SetupStage } from "./setup-progress.js";

export interface SetupCommandOptions {
  stage: SetupStage;
  /** Says what failed, e.g. "Creating the virtual environment". */
  what: string;
  fix: string;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
}

const tailLines = 40;

/**
 * Runs one setup step, `python -m <module> ...args` (venv, pip), without a shell and so that no module comes from the
 * current folder (safeModuleArgs, in the package's python/ folder), forwarding each output line as a `log` progress
 * event. @internal
 */
export async function runSetupCommand(
  python: string,
  module: string,
  args: readonly string[],
  options: SetupCommandOptions,
): Promise<void> {
  const { signal, stage } = options;
  if (signal?.aborted) throw new AbortError(signal.reason);
  const subprocess = execa(python, safeModuleArgs(module, args), {
    env: childEnvironment("setup"),
    extendEnv: false,
    stdin: "ignore",
    all: true,
    buffer: false,
    reject: false,
    cwd: safeWorkingFolder(),
    ...(signal ? { cancelSignal: signal } : {}),
  });
  // pip's own children (build backends, or a shell's sleep) may keep the pipes open after pip is killed:
  // close our ends so an abort returns now instead of when the last of them exits.
  const closePipes = () => {
    subprocess.stdout?.destroy();
    subprocess.stderr?.destroy();
  };
  signal?.addEventListener("abort", closePipes, { once: true });
  const tail: string[] = [];
  try {
    for await (const line of subprocess.iterable({ from: "all" })) {
      tail.push(line);
      if (tail.length > tailLines) tail.shift();
      emitProgress(options.onProgress, { type: "log", stage, message: line });
    }
  } catch {
    // The iteration stops when the process fails; the result below says how.
  }
  const result = await subprocess.finally(() => signal?.removeEventListener("abort", closePipes));
  if (signal?.aborted) throw new AbortError(signal.reason);
  if (!result.failed) return;
  const last = lastOutputLine(tail.join("\n")) || lastOutputLine(result.shortMessage ?? "");
  throw new PythonEnvironmentError("ENV_SETUP_FAILED", `${options.what} failed: ${last}`, {
    fix: options.fix,
    cause: Object.assign(new Error(tail.join("\n")), { command: result.command, exitCode: result.exitCode }),
  });
}

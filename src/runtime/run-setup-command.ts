import { execa } from "execa";
import { AbortError, PythonEnvironmentError } from "../errors.js";
import { childEnvironment } from "./child-environment.js";
import { emitProgress, type ProgressListener, type SetupStage } from "./setup-progress.js";

export interface SetupCommandOptions {
  stage: SetupStage;
  /** Says what failed, e.g. "Creating the virtual environment". */
  what: string;
  fix: string;
  cwd?: string;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
}

const tailLines = 40;

/** Runs one setup step (venv, pip) without a shell, forwarding each output line as a `log` progress event. @internal */
export async function runSetupCommand(file: string, args: readonly string[], options: SetupCommandOptions): Promise<void> {
  const { signal, stage } = options;
  if (signal?.aborted) throw new AbortError(signal.reason);
  const subprocess = execa(file, args, {
    env: childEnvironment("setup"),
    extendEnv: false,
    stdin: "ignore",
    all: true,
    buffer: false,
    reject: false,
    ...(options.cwd ? { cwd: options.cwd } : {}),
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
  const last =
    tail
      .filter((line) => line.trim() !== "")
      .at(-1)
      ?.trim() ?? result.shortMessage;
  throw new PythonEnvironmentError("ENV_SETUP_FAILED", `${options.what} failed: ${last}`, {
    fix: options.fix,
    cause: Object.assign(new Error(tail.join("\n")), { command: result.command, exitCode: result.exitCode }),
  });
}

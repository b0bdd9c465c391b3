import { createWriteStream } from "node:fs";
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
  /**
   * Reads each output line first: `count` when the line became a `progress` event (it is then not a `log` event),
   * `log` otherwise.
   */
  readLine?: ((line: string) => "count" | "log") | undefined;
  /** A file to append the command and its whole output to; its name is in the error's fix when the step fails. */
  logFile?: string | undefined;
}

const tailLines = 40;

/**
 * Runs one setup step, `python -m <module> ...args` (venv, pip), without a shell and so that no module comes from the
 * current folder (safeModuleArgs, in the package's python/ folder), forwarding each output line as a `log` progress
 * event (or, through `readLine`, as a count) and appending it to `logFile`. @internal
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
  const log = openLog(options.logFile);
  log?.write(`$ ${python} -m ${module} ${args.join(" ")}\n`);
  const tail: string[] = [];
  try {
    for await (const line of subprocess.iterable({ from: "all" })) {
      log?.write(`${line}\n`);
      if (options.readLine?.(line) === "count") continue;
      tail.push(line);
      if (tail.length > tailLines) tail.shift();
      emitProgress(options.onProgress, { type: "log", stage, message: line });
    }
  } catch {
    // The iteration stops when the process fails; the result below says how.
  }
  const result = await subprocess.finally(() => signal?.removeEventListener("abort", closePipes));
  log?.write(`(${result.failed ? `failed: ${result.shortMessage ?? `exit code ${result.exitCode}`}` : "done"})\n\n`);
  await new Promise<void>((resolve) => (log ? log.end(resolve) : resolve()));
  if (signal?.aborted) throw new AbortError(signal.reason);
  if (!result.failed) return;
  const last = lastOutputLine(tail.join("\n")) || lastOutputLine(result.shortMessage ?? "");
  throw new PythonEnvironmentError("ENV_SETUP_FAILED", `${options.what} failed: ${last}`, {
    fix: options.logFile ? `${options.fix} The step's whole output is in ${options.logFile}.` : options.fix,
    cause: Object.assign(new Error(tail.join("\n")), { command: result.command, exitCode: result.exitCode, logFile: options.logFile }),
  });
}

// The log is a convenience: a file that cannot be written costs the log, never the set-up.
function openLog(file: string | undefined) {
  if (!file) return undefined;
  const stream = createWriteStream(file, { flags: "a" });
  stream.on("error", () => undefined);
  return stream;
}

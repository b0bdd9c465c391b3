import { promises as fs } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { AbortError, InvalidInputError } from "../errors.js";
import { checkPythonVersions } from "./check-python-versions.js";
import { environmentHash, requirementsDigest } from "./environment-hash.js";
import { idefics2Home } from "./idefics2-home.js";
import { managedEnvironment } from "./managed-environment.js";
import { probePythonVersions, PythonVersions, type PythonSource } from "./python-versions.js";
import { requirementsFile } from "./requirement-pins.js";
import { stampedListener } from "../progress-event.js";
import { emitProgress, type SetupProgress } from "./setup-progress.js";

export const PythonEnvironmentSource = z.enum(["option", "env", "managed"]);
export type PythonEnvironmentSource = z.infer<typeof PythonEnvironmentSource>;

/** The interpreter the worker runs on, where it came from, and what it has installed. */
export const PythonEnvironment = z.object({
  python: z.string(),
  source: PythonEnvironmentSource,
  versions: PythonVersions,
});
export type PythonEnvironment = z.infer<typeof PythonEnvironment>;

export interface EnsurePythonEnvironmentOptions {
  /** An interpreter to use as it is (never installed into). Beats IDEFICS2_PYTHON. */
  python?: string | undefined;
  /** Where managed environments live. Default: IDEFICS2_HOME, else the per-user cache folder. */
  home?: string | undefined;
  /**
   * Also install requirements-dev.txt (pytest, ruff) into the managed environment: the same environment
   * `dev: false` uses, so it is created once; the extras are added on the first dev call (seconds) and recorded.
   */
  dev?: boolean | undefined;
  /** The interpreter that creates the managed venv. Default `python3` (`python` on Windows). */
  basePython?: string | undefined;
  /** When false, use the managed environment only if it is already made (ENV_SETUP_FAILED otherwise). Default true. */
  create?: boolean | undefined;
  /**
   * Also check that every file of the worker's packages and of what they require is there, not only that each is
   * installed and its module found (about a second; `idefics2 setup` and `idefics2 doctor` do). A managed
   * environment found damaged, either way, is repaired: what is damaged is reinstalled (unless `create` is false).
   */
  checkFiles?: boolean | undefined;
  /** How long probing an interpreter given as it is (`python`, IDEFICS2_PYTHON) may take. Default 60000 ms. */
  probeTimeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ((event: SetupProgress) => void) | undefined;
}

/**
 * Finds the interpreter for the worker: the `python` option, else IDEFICS2_PYTHON, else the managed venv at
 * `<home>/envs/<hash>` (created on first use, reused after, repaired when its packages were damaged; one per runtime
 * requirement set and base Python, `dev` or not). Checks Python ≥ 3.10 and that the packages the worker needs are
 * installed and usable; throws PythonEnvironmentError (PYTHON_NOT_FOUND, PYTHON_TOO_OLD, MISSING_PYTHON_PACKAGE,
 * ENV_SETUP_FAILED, also for a home folder that cannot be written) or AbortError.
 */
export async function ensurePythonEnvironment(options: EnsurePythonEnvironmentOptions = {}): Promise<PythonEnvironment> {
  validate(options);
  const { signal } = options;
  const onProgress = stampedListener(options.onProgress);
  if (signal?.aborted) throw new AbortError(signal.reason);

  const given = options.python
    ? { python: options.python, source: "option" as const }
    : process.env.IDEFICS2_PYTHON
      ? { python: process.env.IDEFICS2_PYTHON, source: "env" as const }
      : undefined;
  if (given) {
    const python = asCommand(given.python);
    emitProgress(onProgress, { type: "stage", stage: "probe", message: `Checking ${python}` });
    const versions = await checked(python, given.source, signal, options.probeTimeoutMs, options.checkFiles);
    emitProgress(onProgress, { type: "stage", stage: "ready", message: `Using ${python}` });
    return { python, source: given.source, versions };
  }

  const basePython = asCommand(options.basePython ?? (process.platform === "win32" ? "python" : "python3"));
  const dev = options.dev ?? false;
  emitProgress(onProgress, { type: "stage", stage: "probe", message: `Checking the base interpreter ${basePython}` });
  const base = await probePythonVersions(basePython, { source: "base", signal });
  const tooOld = checkPythonVersions(base, { python: basePython, source: "base" });
  if (tooOld?.code === "PYTHON_TOO_OLD") throw tooOld;

  // One environment per runtime requirement set and base Python; `dev` adds requirements-dev.txt into it.
  const file = requirementsFile(false);
  const hash = environmentHash({ requirements: [await fs.readFile(file, "utf8")], basePythonVersion: base.python });
  const devFile = requirementsFile(true);
  const devExtras = dev ? { requirementsFile: devFile, digest: requirementsDigest(await fs.readFile(devFile, "utf8")) } : undefined;
  const home = idefics2Home(options.home);
  const envDir = path.join(home, "envs", hash);
  const { python, versions } = await managedEnvironment({
    envDir,
    hash,
    logFile: path.join(home, "logs", `setup-${hash}.log`),
    requirementsFile: file,
    dev: devExtras,
    basePython,
    create: options.create ?? true,
    checkFiles: options.checkFiles,
    signal,
    onProgress,
  });
  return { python, source: "managed", versions };
}

async function checked(
  python: string,
  source: PythonSource,
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
  checkFiles: boolean | undefined,
): Promise<PythonVersions> {
  const versions = await probePythonVersions(python, { source, signal, checkFiles, ...(timeoutMs === undefined ? {} : { timeoutMs }) });
  const problem = checkPythonVersions(versions, { python, source });
  if (problem) throw problem;
  return versions;
}

// A path is made absolute (the worker may run elsewhere); a bare name ("python3") is looked up on PATH.
function asCommand(python: string): string {
  return python.includes("/") || python.includes("\\") ? path.resolve(python) : python;
}

function validate(options: EnsurePythonEnvironmentOptions): void {
  for (const key of ["python", "home", "basePython"] as const) {
    const value = options[key];
    if (value !== undefined && (typeof value !== "string" || value === "")) {
      throw new InvalidInputError(
        "INVALID_OPTIONS",
        `Expected the \`${key}\` option to be a non-empty string, got \`${String(value)}\` (${typeof value})`,
      );
    }
    // A lone surrogate cannot be a path: Node would turn it into U+FFFD and name another file.
    if (value !== undefined && /\p{Cs}/u.test(value)) {
      throw new InvalidInputError(
        "INVALID_OPTIONS",
        `Expected the \`${key}\` option to be well-formed Unicode, got ${JSON.stringify(value.slice(0, 60))} (it holds a lone surrogate)`,
      );
    }
  }
  for (const key of ["dev", "checkFiles"] as const) {
    const value = options[key];
    if (value !== undefined && typeof value !== "boolean") {
      throw new InvalidInputError(
        "INVALID_OPTIONS",
        `Expected the \`${key}\` option to be a boolean, got \`${String(value)}\` (${typeof value})`,
      );
    }
  }
}

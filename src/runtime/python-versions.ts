import { z } from "zod";
import { AbortError, PythonEnvironmentError } from "../errors.js";
import { lastOutputLine } from "../printable.js";
import { runProbe } from "./run-probe.js";

/** An installed package that cannot be used: its module or a file of it is gone, or it is a requirement not installed. */
export const DamagedPackage = z.object({
  name: z.string(),
  /** Its installed version, `null` when it is not installed at all. */
  version: z.string().nullable(),
  /** What is wrong: "its module PIL cannot be found", "not installed, but transformers requires it". */
  problem: z.string(),
  /** The package that needs it, for a requirement; `null` for one of the worker's own packages. */
  requiredBy: z.string().nullable(),
});
export type DamagedPackage = z.infer<typeof DamagedPackage>;

/**
 * Versions found in an interpreter; a package is `null` when it is not installed or not usable (its module or, when
 * files were checked, one of its files is gone). `damaged` lists what is installed but unusable, and requirements of
 * the worker's packages that are missing; it is left out when there is nothing to list.
 */
export const PythonVersions = z.object({
  python: z.string(),
  torch: z.string().nullable(),
  transformers: z.string().nullable(),
  bitsandbytes: z.string().nullable(),
  accelerate: z.string().nullable(),
  pillow: z.string().nullable(),
  safetensors: z.string().nullable(),
  damaged: z.array(DamagedPackage).optional(),
  /**
   * Whether torch and transformers were compiled to bytecode beside their sources, as pip leaves them. `false` where
   * they were installed without it (PYTHONDONTWRITEBYTECODE set, a read-only install): then every start would compile
   * them anew, and the worker keeps their bytecode under `<home>/bytecode` instead. Left out by interpreters too old
   * to be checked.
   */
  compiled: z.boolean().optional(),
});
export type PythonVersions = z.infer<typeof PythonVersions>;

/** Where an interpreter came from: the `python` option, IDEFICS2_PYTHON, the managed venv, or the base for it. */
export type PythonSource = "option" | "env" | "managed" | "base";

export interface ProbeOptions {
  source: PythonSource;
  signal?: AbortSignal | undefined;
  timeoutMs?: number;
  /** Also check that every file the packages' RECORDs list is there (a second or so): setup and doctor do. */
  checkFiles?: boolean | undefined;
}

/**
 * Runs `python` once and returns the versions of Python and of the packages the worker needs, from the versions
 * probe (python/idefics2_worker/probe/versions.py: metadata and module lookups, nothing imported; it still answers
 * on an old Python, so the version check can name it), with what it found damaged. @internal
 */
export async function probePythonVersions(python: string, options: ProbeOptions): Promise<PythonVersions> {
  const { signal } = options;
  if (signal?.aborted) throw new AbortError(signal.reason);
  const result = await runProbe({ python, source: options.source }, "versions", {
    signal,
    timeoutMs: options.timeoutMs ?? 60_000,
    args: options.checkFiles ? ["--files"] : [],
  });
  if (result.isCanceled && signal) throw new AbortError(signal.reason);
  const where = describeSource(options.source);
  if (result.failed && (result.code === "ENOENT" || result.code === "EACCES" || result.code === "ENOTDIR")) {
    throw new PythonEnvironmentError("PYTHON_NOT_FOUND", `No Python interpreter at ${python} (${where}): ${result.code}`, {
      fix: fixFor(options.source),
    });
  }
  const last = result.stdout.trim().split("\n").at(-1) ?? "";
  const parsed = result.failed ? undefined : PythonVersions.safeParse(safeJson(last));
  if (!parsed?.success) {
    const detail = lastOutputLine(result.stderr) || lastOutputLine(result.stdout) || lastOutputLine(result.shortMessage ?? "");
    throw new PythonEnvironmentError("PYTHON_NOT_FOUND", `${python} (${where}) is not a working Python interpreter: ${detail}`, {
      fix: fixFor(options.source),
      cause: result.failed ? result : parsed?.error,
    });
  }
  return parsed.data;
}

/** Says in words where an interpreter came from, for error messages. @internal */
export function describeSource(source: PythonSource): string {
  switch (source) {
    case "option":
      return "from the `python` option";
    case "env":
      return "from IDEFICS2_PYTHON";
    case "managed":
      return "the managed environment";
    case "base":
      return "the base interpreter used to create the managed environment";
  }
}

function fixFor(source: PythonSource): string {
  switch (source) {
    case "option":
      return "Pass the path of a Python 3.10+ executable as the `python` option, or leave it out to use the managed environment.";
    case "env":
      return "Set IDEFICS2_PYTHON to the path of a Python 3.10+ executable, or unset it to use the managed environment.";
    case "managed":
      return "Delete the managed environment's folder and run `idefics2 setup` again.";
    case "base":
      return "Install Python 3.10+ (with its venv module) and put `python3` on PATH, or pass `basePython`.";
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

import { execa } from "execa";
import { z } from "zod";
import { AbortError, PythonEnvironmentError } from "../errors.js";
import { childEnvironment } from "./child-environment.js";

/** Versions found in an interpreter; a package is `null` when it is not installed. */
export const PythonVersions = z.object({
  python: z.string(),
  torch: z.string().nullable(),
  transformers: z.string().nullable(),
  bitsandbytes: z.string().nullable(),
  accelerate: z.string().nullable(),
  pillow: z.string().nullable(),
  safetensors: z.string().nullable(),
});
export type PythonVersions = z.infer<typeof PythonVersions>;

/** Where an interpreter came from: the `python` option, IDEFICS2_PYTHON, the managed venv, or the base for it. */
export type PythonSource = "option" | "env" | "managed" | "base";

// Reads installed distributions' metadata without importing them (importing torch takes seconds).
// Written for any Python: an old one must still print its version so the caller can name it.
const probeCode = `
import json, sys
names = ["torch", "transformers", "bitsandbytes", "accelerate", "pillow", "safetensors"]
try:
    from importlib import metadata
except ImportError:
    metadata = None
def version(name):
    if metadata is None:
        return None
    try:
        return metadata.version(name)
    except Exception:
        return None
found = dict((name, version(name)) for name in names)
found["python"] = "%d.%d.%d" % tuple(sys.version_info[:3])
sys.stdout.write("\\n" + json.dumps(found) + "\\n")
`;

export interface ProbeOptions {
  source: PythonSource;
  signal?: AbortSignal | undefined;
  timeoutMs?: number;
}

/** Runs `python` once and returns the versions of Python and of the packages the worker needs. @internal */
export async function probePythonVersions(python: string, options: ProbeOptions): Promise<PythonVersions> {
  const { signal } = options;
  if (signal?.aborted) throw new AbortError(signal.reason);
  const result = await execa(python, ["-c", probeCode], {
    env: childEnvironment("worker"),
    extendEnv: false,
    reject: false,
    stdin: "ignore",
    timeout: options.timeoutMs ?? 60_000,
    ...(signal ? { cancelSignal: signal } : {}),
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
    const detail = lastLine(result.stderr) || lastLine(result.stdout) || result.shortMessage;
    throw new PythonEnvironmentError(
      "PYTHON_NOT_FOUND",
      `${python} (${where}) is not a working Python interpreter: ${detail}`,
      { fix: fixFor(options.source), cause: result.failed ? result : parsed?.error },
    );
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

function lastLine(text: string): string {
  return (text.trim().split("\n").at(-1) ?? "").trim().slice(0, 300);
}

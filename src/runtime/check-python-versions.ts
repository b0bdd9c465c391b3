import { PythonEnvironmentError } from "../errors.js";
import { describeSource, type PythonSource, type PythonVersions } from "./python-versions.js";
import { requirementPin } from "./requirement-pins.js";
import { versionAtLeast } from "./version-at-least.js";

export const MINIMUM_PYTHON = "3.10";
export const MINIMUM_TRANSFORMERS = "5.0";

// torch is left unpinned in the fix: whoever brings their own interpreter picks their own (CUDA) build.
const required = ["torch", "transformers", "accelerate", "pillow", "safetensors"] as const;

/**
 * Checks that an interpreter can run the worker: Python ≥ 3.10, and torch, transformers ≥ 5.0, accelerate,
 * pillow and safetensors installed. Returns the error to throw or report, or undefined when all is well.
 * bitsandbytes is checked separately (checkBitsandbytes): only quantized loads need it.
 */
export function checkPythonVersions(
  versions: PythonVersions,
  interpreter: { python: string; source: PythonSource },
): PythonEnvironmentError | undefined {
  const where = `${interpreter.python} (${describeSource(interpreter.source)})`;
  if (!versionAtLeast(versions.python, MINIMUM_PYTHON)) {
    return new PythonEnvironmentError(
      "PYTHON_TOO_OLD",
      `Python ${versions.python} at ${where} is too old: idefics2 needs Python ${MINIMUM_PYTHON} or newer`,
      {
        fix: `Use a Python ${MINIMUM_PYTHON}+ interpreter (the \`python\` option or IDEFICS2_PYTHON), or unset both to use the managed environment.`,
      },
    );
  }
  const missing: string[] = [];
  const install: string[] = [];
  for (const name of required) {
    const found = versions[name];
    if (found === null) {
      missing.push(name);
      install.push(name === "torch" ? "torch" : requirementPin(name));
    } else if (name === "transformers" && !versionAtLeast(found, MINIMUM_TRANSFORMERS)) {
      missing.push(`transformers>=${MINIMUM_TRANSFORMERS} (found ${found})`);
      install.push(requirementPin(name));
    }
  }
  if (missing.length === 0) return undefined;
  const command = `${quote(interpreter.python)} -m pip install ${install.map(quote).join(" ")}`;
  return new PythonEnvironmentError("MISSING_PYTHON_PACKAGE", `Python at ${where} lacks ${missing.join(", ")}`, { fix: `Run: ${command}` });
}

/** Quotes a shell word when it needs it, for commands shown to the user. @internal */
export function quote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `"${word.replace(/(["\\$`])/g, "\\$1")}"`;
}

import { PythonEnvironmentError } from "../errors.js";
import { type DamagedPackage, describeSource, type PythonSource, type PythonVersions } from "./python-versions.js";
import { requirementPin } from "./requirement-pins.js";
import { versionAtLeast } from "./version-at-least.js";

export const MINIMUM_PYTHON = "3.10";
export const MINIMUM_TRANSFORMERS = "5.0";

// torch is left unpinned in the fix: whoever brings their own interpreter picks their own (CUDA) build.
const required = ["torch", "transformers", "accelerate", "pillow", "safetensors"] as const;

/**
 * Checks that an interpreter can run the worker: Python ≥ 3.10, and torch, transformers ≥ 5.0, accelerate,
 * pillow and safetensors installed and usable, with what they require (nothing the probe found damaged). Returns
 * the error to throw or report, or undefined when all is well.
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
  // bitsandbytes is for quantized loads only (checkBitsandbytes); in the managed environment it is pinned like the rest.
  const optional = (entry: DamagedPackage) => entry.name === "bitsandbytes" || entry.requiredBy === "bitsandbytes";
  const damaged = (versions.damaged ?? []).filter((entry) => interpreter.source === "managed" || !optional(entry));
  const damagedNames = new Set(damaged.map((entry) => entry.name));
  const missing: string[] = [];
  const install: string[] = [];
  for (const name of required) {
    const found = versions[name];
    if (found === null) {
      if (!damagedNames.has(name)) missing.push(name);
      install.push(name === "torch" ? "torch" : requirementPin(name));
    } else if (name === "transformers" && !versionAtLeast(found, MINIMUM_TRANSFORMERS)) {
      missing.push(`transformers>=${MINIMUM_TRANSFORMERS} (found ${found})`);
      install.push(requirementPin(name));
    }
  }
  if (missing.length === 0 && damaged.length === 0) return undefined;
  const problems = [
    ...(missing.length > 0 ? [`lacks ${missing.join(", ")}`] : []),
    ...(damaged.length > 0 ? [`has packages it cannot use: ${listDamaged(damaged)}`] : []),
  ];
  return new PythonEnvironmentError("MISSING_PYTHON_PACKAGE", `Python at ${where} ${problems.join(" and ")}`, {
    fix:
      interpreter.source === "managed"
        ? "Run `idefics2 setup` (or call ensurePythonEnvironment()): it reinstalls what is missing or damaged."
        : `Run: ${repairCommands(interpreter.python, install, damaged).join(" && ")}`,
  });
}

// "transformers 5.17.0 (its module transformers cannot be found), tokenizers (not installed, …)", a few of them.
function listDamaged(damaged: readonly DamagedPackage[]): string {
  const shown = damaged.slice(0, 4).map((entry) => `${entry.name}${entry.version ? ` ${entry.version}` : ""} (${entry.problem})`);
  return `${shown.join(", ")}${damaged.length > shown.length ? ` and ${damaged.length - shown.length} more` : ""}`;
}

// pip commands for an interpreter the user brings: a damaged package is reinstalled as it is (its metadata says it
// is installed, so a plain install would do nothing); a missing requirement comes with reinstalling what needs it.
function repairCommands(python: string, install: readonly string[], damaged: readonly DamagedPackage[]): string[] {
  const pip = `${quote(python)} -m pip install`;
  const reinstall = damaged.filter((entry) => entry.version !== null).map((entry) => `${entry.name}==${entry.version}`);
  const needing = damaged.filter((entry) => entry.version === null && entry.requiredBy !== null).map((entry) => entry.requiredBy as string);
  const wanted = [...new Set([...install, ...needing.filter((name) => !install.some((pin) => pin.split("==")[0] === name))])];
  return [
    ...(wanted.length > 0 ? [`${pip} ${wanted.map(quote).join(" ")}`] : []),
    ...(reinstall.length > 0 ? [`${pip} --force-reinstall --no-deps ${reinstall.map(quote).join(" ")}`] : []),
  ];
}

/** Quotes a shell word when it needs it, for commands shown to the user. @internal */
export function quote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `"${word.replace(/(["\\$`])/g, "\\$1")}"`;
}

import { chmod, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { PythonVersions } from "../../src/runtime/python-versions.js";

export const goodVersions: PythonVersions = {
  python: "3.11.7",
  torch: "2.13.0+cpu",
  transformers: "5.17.0",
  bitsandbytes: "0.50.2",
  accelerate: "1.15.0",
  pillow: "13.0.0",
  safetensors: "0.8.0",
};

const nothing = { torch: null, transformers: null, bitsandbytes: null, accelerate: null, pillow: null, safetensors: null };
// The versions probe's module: the fakes answer it as the real probe would. Every Python child is started as
// `python -c <bootstrap> <module> ...args` (src/runtime/safe-module-args.ts), so the module is the third argument.
const versionsProbe = "idefics2_worker.probe.versions";

async function script(file: string, body: string): Promise<string> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, `#!/bin/sh\n${body}\n`);
  await chmod(file, 0o755);
  return file;
}

/** A one-line interpreter that answers the version probe with `versions`. */
export function fakePython(dir: string, versions: PythonVersions): Promise<string> {
  return script(path.join(dir, "python"), `echo '${JSON.stringify(versions)}'`);
}

/**
 * A fake base interpreter: answers the versions probe (module idefics2_worker.probe.versions) as a bare Python
 * 3.11, makes module `venv DIR` a folder holding a fake venv python, whose module `pip install -r FILE` prints two
 * lines (nothing for requirements-pip.txt, the pip upgrade), waits `pipSeconds`, and records `<env dir> <FILE's name>` in `<dir>/installs`; after the install its
 * probe reports every package. While `<dir>/fail-dev` exists, installing requirements-dev.txt fails.
 */
export async function fakeBasePython(dir: string, pipSeconds = 0.3): Promise<{ python: string; installs: string; venvs: string }> {
  const installs = path.join(dir, "installs");
  const venvs = path.join(dir, "venvs");
  const venvPython = await script(
    path.join(dir, "venv-python"),
    [
      'env_dir="$(dirname "$(dirname "$0")")"',
      'case "$3" in',
      `  ${versionsProbe}) if [ -f "$env_dir/installed" ]; then echo '${JSON.stringify(goodVersions)}'; else echo '${JSON.stringify({ python: "3.11.7", ...nothing })}'; fi ;;`,
      // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax for the last argument, not a template
      '  pip) eval "file=\\${$#}"; name="$(basename "$file")"',
      // The pip upgrade before the first install answers as an up-to-date pip does: silently.
      '      if [ "$name" = requirements-pip.txt ]; then exit 0; fi',
      '      if [ "$name" = requirements-dev.txt ]; then',
      `        echo "Requirement already satisfied: torch==2.13.0"; sleep ${String(pipSeconds)}`,
      `        if [ -f '${path.join(dir, "fail-dev")}' ]; then echo "ERROR: No matching distribution found for pytest==9.2.0"; exit 1; fi`,
      '        echo "Successfully installed pytest-9.2.0 ruff-0.17.6"',
      "      else",
      `        echo "Collecting torch==2.13.0"; sleep ${pipSeconds}; echo "Successfully installed torch-2.13.0"; touch "$env_dir/installed"`,
      "      fi",
      `      echo "$env_dir $name" >> '${installs}' ;;`,
      "esac",
    ].join("\n"),
  );
  const python = await script(
    path.join(dir, "base-python"),
    [
      'case "$3" in',
      `  ${versionsProbe}) echo '${JSON.stringify({ python: "3.11.7", ...nothing })}' ;;`,
      `  venv) mkdir -p "$4/bin" && cp '${venvPython}' "$4/bin/python" && echo "$4" >> '${venvs}' ;;`,
      "esac",
    ].join("\n"),
  );
  return { python, installs, venvs };
}

import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { devNull, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { repoRoot } from "../helpers/reference.js";
import { colourQuestion } from "./corpus-helpers.js";

// Code planted in the folder a user runs from (a cloned repository, a downloads folder) must never run: no Python
// the package starts (the worker, the probes, venv and pip during setup) takes a module from the current folder.
// Every planted module writes a marker file when imported; the CLI and the SDK run from that folder and the
// markers folder must stay empty.

// Modules the worker, the probes, venv and pip import (or that `python -m` itself imports: runpy), and packages
// they are made of; each is planted both as a module and, where a package, with a __main__.
const MODULES = [
  "json",
  "runpy",
  "types",
  "re",
  "struct",
  "threading",
  "typing",
  "codecs",
  "platform",
  "subprocess",
  "signal",
  "selectors",
  "warnings",
  "contextlib",
  "dataclasses",
  "pathlib",
  "functools",
  "enum",
  "math",
  "site",
  "sitecustomize",
  "usercustomize",
  "zipimport",
  "__main__",
];
const PACKAGES = [
  "idefics2_worker",
  "encodings",
  "importlib",
  "collections",
  "venv",
  "ensurepip",
  "pip",
  "setuptools",
  "torch",
  "transformers",
  "PIL",
  "numpy",
  "safetensors",
  "accelerate",
  "bitsandbytes",
  "tokenizers",
  "huggingface_hub",
];

let root: string;
let planted: string;
let markers: string;
const found = () => readdir(markers);

const plant = (name: string) => `open(${JSON.stringify(join(markers, name))}, "w").write("planted code ran")\n`;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "idefics2-planted-"));
  planted = join(root, "cloned-repository");
  markers = join(root, "markers");
  await mkdir(planted);
  await mkdir(markers);
  for (const name of MODULES) await writeFile(join(planted, `${name}.py`), plant(name));
  for (const name of PACKAGES) {
    await mkdir(join(planted, name));
    await writeFile(join(planted, name, "__init__.py"), plant(name));
    await writeFile(join(planted, name, "__main__.py"), plant(`${name}.__main__`));
  }
  // pyenv's shims pick the interpreter named by .python-version in the current folder.
  await writeFile(join(planted, ".python-version"), "2.7.18\n");
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

// The managed environment the suite uses, when it does (testPython() may be an interpreter of the user's).
const managedHome = (() => {
  const envDir = dirname(dirname(testPython()));
  return existsSync(join(envDir, "ready.json")) ? dirname(dirname(envDir)) : undefined;
})();

// The built CLI, run as a user would, from the planted folder.
function idefics2(args: string[], env: Record<string, string> = {}) {
  return execa(process.execPath, [join(repoRoot, "dist", "cli", "main.js"), ...args], {
    cwd: planted,
    reject: false,
    env,
    timeout: 240_000,
  });
}

const ask = ["generate", "--prompt", colourQuestion, "--image", demoSecond, "--max-new-tokens", "12"];

describe("nothing planted in the current folder runs", () => {
  it("the markers are live: plain `python -m` from that folder would run them", async () => {
    await execa(testPython(), ["-m", "idefics2_worker.probe.versions"], { cwd: planted, reject: false, env: { PYTHONPATH: "" } });
    expect(await found()).not.toEqual([]);
    await rm(markers, { recursive: true });
    await mkdir(markers);
  });

  it("`idefics2 generate` with an interpreter of the user's (IDEFICS2_PYTHON), also with PYTHONPATH entries meaning the current folder", async () => {
    for (const PYTHONPATH of ["", `${repoRoot}::.:relative/site`]) {
      const result = await idefics2(ask, { IDEFICS2_PYTHON: testPython(), PYTHONPATH });
      // Nothing on stderr but the progress display's plain lines (stderr is no terminal here).
      for (const line of result.stderr.split("\n").filter(Boolean)) expect(line).toMatch(/^\[ *\d+(\.\d)? (ms|s)\] [a-z-]+ /);
      expect(result.stdout.toLowerCase()).toContain("blue");
      expect(result.exitCode).toBe(0);
    }
    expect(await found()).toEqual([]);
  });

  it.runIf(managedHome)("`idefics2 generate` and `idefics2 doctor` with the managed environment", async () => {
    const env = { IDEFICS2_HOME: managedHome as string };
    const generated = await idefics2(ask, env);
    expect(generated.stdout.toLowerCase()).toContain("blue");
    expect(generated.exitCode).toBe(0);
    const doctor = await idefics2(["doctor", "--json"], env);
    expect(JSON.parse(doctor.stdout)).toMatchObject({ ok: true, source: "managed" });
    expect(await found()).toEqual([]);
  });

  it("`idefics2 doctor` with an interpreter of the user's", async () => {
    const result = await idefics2(["doctor", "--json"], { IDEFICS2_PYTHON: testPython() });
    expect(JSON.parse(result.stdout)).toMatchObject({ ok: true, source: "env" });
    expect(await found()).toEqual([]);
  });

  it("`idefics2 setup` on a fresh home: the real venv and pip run, and neither the planted venv nor pip", async () => {
    // pip offline and without its configuration: it fails at the first requirement, after venv and pip both ran.
    const home = join(root, "fresh-home");
    const result = await idefics2(["setup"], { IDEFICS2_HOME: home, PIP_CONFIG_FILE: devNull, PIP_NO_INDEX: "1", PIP_FIND_LINKS: "" });
    expect(result.stderr).toMatch(/\] venv +Creating a virtual environment/);
    expect(result.stderr).toMatch(/idefics2: error \[ENV_SETUP_FAILED\]: Installing .*requirements\.txt failed: ERROR: .*torch==/);
    // pip's own lines are in the set-up's log, which the error names.
    expect(result.stderr).toMatch(/The step's whole output is in .*fresh-home\/logs\/setup-[0-9a-f]{16}\.log/);
    expect(await found()).toEqual([]);
  });

  it("the SDK, in a program started from that folder: ensurePythonEnvironment, runDoctor, load and generate", async () => {
    const program = [
      `import { Idefics2, ensurePythonEnvironment, runDoctor, user, image } from ${JSON.stringify(join(repoRoot, "dist", "index.js"))};`,
      `const python = ${JSON.stringify(testPython())};`,
      "await ensurePythonEnvironment({ python });",
      "const report = await runDoctor({ python });",
      "const model = await Idefics2.load({ python });",
      `const result = await model.generate([user(image(${JSON.stringify(demoSecond)}), ${JSON.stringify(colourQuestion)})], { maxNewTokens: 12 });`,
      "await model.close();",
      "console.log(JSON.stringify({ ok: report.ok, text: result.text }));",
    ].join("\n");
    const result = await execa(process.execPath, ["--input-type=module", "-e", program], { cwd: planted, reject: false, timeout: 240_000 });
    expect(result.exitCode, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ ok: true, text: expect.stringMatching(/blue/i) });
    expect(await found()).toEqual([]);
  });
});

import { existsSync, readdirSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { packageRoot } from "../../src/runtime/package-root.js";
import { pythonModuleCommand } from "../../src/runtime/python-module-command.js";
import { absolutePathEntries, safeModuleArgs, safeWorkingFolder } from "../../src/runtime/safe-module-args.js";
import { testPython } from "../helpers/python.js";

// The bootstrap alone keeps the current folder off sys.path, on every Python the probes run on (2.6 up): each test
// runs a Python child in a folder full of planted modules, with that folder as its working folder on purpose.

let planted: string;
let markers: string;
const PLANTED = ["json", "runpy", "types", "re", "os", "io", "site", "sitecustomize", "usercustomize", "platform", "importlib"];

beforeAll(async () => {
  const root = await mkdtemp(path.join(tmpdir(), "idefics2-safe-args-"));
  planted = path.join(root, "planted");
  markers = path.join(root, "markers");
  await mkdir(planted);
  for (const name of PLANTED) await writeFile(path.join(planted, `${name}.py`), `open(${JSON.stringify(path.join(markers, name))}, "w")\n`);
  for (const name of ["idefics2_worker", "encodings", "venv"]) {
    await mkdir(path.join(planted, name));
    await writeFile(path.join(planted, name, "__init__.py"), `open(${JSON.stringify(path.join(markers, name))}, "w")\n`);
  }
});

beforeEach(async () => {
  await rm(markers, { recursive: true, force: true });
  await mkdir(markers);
});

afterAll(async () => {
  await rm(path.dirname(planted), { recursive: true, force: true });
});

// The suite's interpreter and every pyenv version installed here (2.7 to 3.13 on the project's machines).
function interpreters(): string[] {
  const pyenv = path.join(process.env.PYENV_ROOT ?? path.join(homedir(), ".pyenv"), "versions");
  const found = existsSync(pyenv) ? readdirSync(pyenv).map((version) => path.join(pyenv, version, "bin", "python")) : [];
  return [testPython(), ...found.filter((python) => existsSync(python))];
}

describe.each(interpreters())("on %s", (python) => {
  it("the versions probe runs from a folder of planted modules without importing one", async () => {
    const command = pythonModuleCommand({ python, source: "option" }, "idefics2_worker.probe.versions", [], { PATH: process.env.PATH });
    const result = await execa(command.file, command.args, { env: command.env, extendEnv: false, cwd: planted, reject: false });
    expect(result.exitCode, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout.trim().split("\n").at(-1) ?? "")).toHaveProperty("python");
    expect(await readdir(markers)).toEqual([]);
  });

  it("runs the module as `-m` does: its own argv, __name__ and exit code", async () => {
    const code = "import sys; sys.stdout.write(repr([__name__, sys.argv[1:]])); sys.exit(3)";
    const folder = path.join(path.dirname(planted), "module");
    await mkdir(path.join(folder, "probe_me"), { recursive: true });
    await writeFile(path.join(folder, "probe_me", "__init__.py"), "");
    await writeFile(path.join(folder, "probe_me", "__main__.py"), code);
    const result = await execa(python, safeModuleArgs("probe_me", ["a", "--b"]), {
      env: { PATH: process.env.PATH ?? "", PYTHONPATH: folder },
      extendEnv: false,
      cwd: planted,
      reject: false,
    });
    expect(result.exitCode).toBe(3);
    expect(result.stdout).toBe("['__main__', ['a', '--b']]");
    expect(await readdir(markers)).toEqual([]);
  });
});

describe("the rest of the guard", () => {
  it("plain `python -m` from the planted folder does import them: the planted modules are live", async () => {
    await execa(testPython(), ["-m", "idefics2_worker.probe.versions"], { cwd: planted, reject: false, env: { PYTHONPATH: "" } });
    expect(await readdir(markers)).not.toEqual([]);
  });

  it("every Python child runs in the package's python/ folder, which holds only the package's own code", () => {
    expect(safeWorkingFolder()).toBe(path.join(packageRoot(), "python"));
    expect(pythonModuleCommand({ python: "python3" }, "idefics2_worker").cwd).toBe(safeWorkingFolder());
    const own = readdirSync(safeWorkingFolder()).filter((name) => name.endsWith(".py") || name === "__main__");
    expect(own).toEqual([]);
  });

  it.each([
    ["", []],
    [":", []],
    [`/a${path.delimiter}${path.delimiter}./b${path.delimiter}.${path.delimiter}/c${path.delimiter}relative`, ["/a", "/c"]],
  ])("only absolute PYTHONPATH entries of %j pass on", (value, kept) => {
    expect(absolutePathEntries(value)).toEqual(kept);
  });
});

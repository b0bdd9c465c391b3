import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { PythonEnvironmentError } from "../../src/errors.js";
import { Idefics2 } from "../../src/model.js";
import { runDoctor } from "../../src/runtime/doctor.js";
import { ensurePythonEnvironment } from "../../src/runtime/python-environment.js";
import type { SetupProgress } from "../../src/runtime/setup-progress.js";
import { fakeBasePython, goodVersions } from "./fake-python.js";

// A managed environment whose packages were damaged after it was made (a package folder deleted, a package
// uninstalled, one file gone) is found, reported with the fix that works, and repaired by setup without rebuilding
// it. A home folder that cannot be written is a PythonEnvironmentError naming it, never a raw ENOENT.

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "idefics2-damaged-"));
  vi.stubEnv("IDEFICS2_PYTHON", "");
  vi.stubEnv("IDEFICS2_HOME", "");
});
afterEach(async () => {
  vi.unstubAllEnvs();
  await chmod(dir, 0o755).catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

const moduleGone = {
  ...goodVersions,
  transformers: null,
  damaged: [
    { name: "transformers", version: "5.17.0", problem: "its module transformers cannot be found", requiredBy: null },
    { name: "tokenizers", version: null, problem: "not installed, but transformers requires it", requiredBy: "transformers" },
  ],
};
const fileGone = {
  ...goodVersions,
  transformers: null,
  damaged: [{ name: "transformers", version: "5.17.0", problem: "its file transformers/models/auto.py is missing", requiredBy: null }],
};

// The venv interpreter the fake base made, replaced by one whose probe reports the damage its marker files name
// (`damage-module`; `damage-file`, seen only with --files) and whose pip records each call; installing
// requirements.txt repairs everything, unless `fail-pip` exists.
async function damageable(
  python: string,
): Promise<{ envDir: string; pipCalls: () => Promise<string[]>; pipUpgrades: () => Promise<string[]>; probes: () => Promise<string[]> }> {
  const envDir = path.dirname(path.dirname(python));
  const script = [
    "#!/bin/sh",
    'env_dir="$(dirname "$(dirname "$0")")"',
    'case "$3" in',
    "  idefics2_worker.probe.versions)",
    '    echo "files=$4" >> "$env_dir/probes"',
    `    if [ -f "$env_dir/damage-module" ]; then echo '${JSON.stringify(moduleGone)}'`,
    `    elif [ -f "$env_dir/damage-file" ] && [ "$4" = "--files" ]; then echo '${JSON.stringify(fileGone)}'`,
    `    else echo '${JSON.stringify(goodVersions)}'; fi ;;`,
    "  pip)",
    '    shift 3; echo "$*" >> "$env_dir/pip-calls"',
    '    if [ -f "$env_dir/fail-pip" ]; then echo "ERROR: Could not install transformers==5.17.0"; exit 1; fi',
    '    echo "Successfully installed transformers-5.17.0"',
    '    case "$*" in *" -r "*) rm -f "$env_dir/damage-module" "$env_dir/damage-file" ;; esac ;;',
    "esac",
  ].join("\n");
  await writeFile(python, `${script}\n`, { mode: 0o755 });
  const lines = (name: string) => async () => (await readFile(path.join(envDir, name), "utf8").catch(() => "")).split("\n").filter(Boolean);
  // Each set-up that installs first upgrades pip (python/requirements-pip.txt): kept apart from the installs.
  const upgrade = (call: string) => call.endsWith("requirements-pip.txt");
  const pipCalls = async () => (await lines("pip-calls")()).filter((call) => !upgrade(call));
  const pipUpgrades = async () => (await lines("pip-calls")()).filter(upgrade);
  return { envDir, pipCalls, pipUpgrades, probes: lines("probes") };
}

async function made(): Promise<{ home: string; basePython: string; venvs: string; python: string }> {
  const base = await fakeBasePython(dir);
  const home = path.join(dir, "home");
  const { python } = await ensurePythonEnvironment({ home, basePython: base.python });
  return { home, basePython: base.python, venvs: base.venvs, python };
}

async function rejection(promise: Promise<unknown>): Promise<PythonEnvironmentError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(PythonEnvironmentError);
  return error as PythonEnvironmentError;
}

describe("a managed environment damaged after it was made", () => {
  test("a package folder deleted and a requirement uninstalled: the doctor names both and setup's fix; setup reinstalls them", async () => {
    const { home, basePython, venvs, python } = await made();
    const env = await damageable(python);
    await writeFile(path.join(env.envDir, "damage-module"), "");

    const refused = await rejection(ensurePythonEnvironment({ home, basePython, create: false }));
    expect(refused.code).toBe("MISSING_PYTHON_PACKAGE");
    expect(refused.message).toContain("is damaged");
    expect(refused.message).toContain("transformers 5.17.0 (its module transformers cannot be found)");
    expect(refused.message).toContain("tokenizers (not installed, but transformers requires it)");
    expect(refused.fix).toMatch(/idefics2 setup.*reinstalls what is missing or damaged/);

    const report = await runDoctor({ home, basePython });
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual([expect.objectContaining({ code: "MISSING_PYTHON_PACKAGE", severity: "error", fix: refused.fix })]);
    expect(await env.pipCalls()).toEqual([]);

    const events: SetupProgress[] = [];
    const repaired = await ensurePythonEnvironment({ home, basePython, checkFiles: true, onProgress: (event) => events.push(event) });
    expect(repaired).toMatchObject({ python, source: "managed", versions: goodVersions });
    expect(events.filter((event) => event.type === "stage").map((event) => event.stage)).toEqual([
      "probe",
      "pip",
      "pip",
      "verify",
      "ready",
    ]);
    const calls = await env.pipCalls();
    expect(await env.pipUpgrades()).toEqual([expect.stringMatching(/^install .*--progress-bar off -r .*python\/requirements-pip\.txt$/)]);
    expect(calls).toHaveLength(2);
    expect(calls.every((call) => call.includes("--progress-bar raw"))).toBe(true);
    expect(calls[0]).toMatch(/^install .* --force-reinstall --no-deps transformers==5\.17\.0$/);
    expect(calls[1]).toMatch(/^install .* -r .*python\/requirements\.txt$/);
    // Repaired in place: the venv was made once.
    expect((await readFile(venvs, "utf8")).trim().split("\n")).toHaveLength(1);
    // (The fake answers no doctor's probe: only the package check is looked at.)
    expect((await runDoctor({ home, basePython })).problems.map((problem) => problem.code)).not.toContain("MISSING_PYTHON_PACKAGE");
    expect(await ensurePythonEnvironment({ home, basePython, create: false })).toMatchObject({ python });
  });

  test("a single file gone: load's quick check passes it, the file check of setup and doctor finds it", async () => {
    const { home, basePython, python } = await made();
    const env = await damageable(python);
    await writeFile(path.join(env.envDir, "damage-file"), "");

    await ensurePythonEnvironment({ home, basePython });
    expect(await env.probes()).toEqual(["files="]);
    expect(await env.pipCalls()).toEqual([]);

    const report = await runDoctor({ home, basePython });
    expect(report.problems[0]).toMatchObject({
      code: "MISSING_PYTHON_PACKAGE",
      message: expect.stringContaining("transformers 5.17.0 (its file transformers/models/auto.py is missing)"),
    });
    expect(await env.probes()).toContain("files=--files");

    await ensurePythonEnvironment({ home, basePython, checkFiles: true });
    expect((await env.pipCalls())[0]).toMatch(/--force-reinstall --no-deps transformers==5\.17\.0$/);
    expect((await runDoctor({ home, basePython })).problems.map((problem) => problem.code)).not.toContain("MISSING_PYTHON_PACKAGE");
  });

  test("a repair that fails is ENV_SETUP_FAILED with pip's line and the way out, and the damage is still reported", async () => {
    const { home, basePython, python } = await made();
    const env = await damageable(python);
    await writeFile(path.join(env.envDir, "damage-module"), "");
    await writeFile(path.join(env.envDir, "fail-pip"), "");
    const error = await rejection(ensurePythonEnvironment({ home, basePython }));
    expect(error.code).toBe("ENV_SETUP_FAILED");
    expect(error.message).toMatch(/Reinstalling transformers==5\.17\.0 failed: ERROR: Could not install transformers==5\.17\.0$/);
    expect(error.fix).toMatch(/run `idefics2 setup` again, or delete the environment's folder/);
    expect((await rejection(ensurePythonEnvironment({ home, basePython, create: false }))).code).toBe("MISSING_PYTHON_PACKAGE");
  });
});

describe("a home folder that cannot be written", () => {
  const cases: [string, () => Promise<string>][] = [
    ["inside /proc (ENOENT)", async () => "/proc/idefics2-home"],
    [
      "below a regular file (ENOTDIR)",
      async () => {
        await writeFile(path.join(dir, "a-file"), "");
        return path.join(dir, "a-file", "home");
      },
    ],
    [
      "read-only (EACCES, unless root)",
      async () => {
        const folder = path.join(dir, "read-only");
        await mkdir(folder);
        await chmod(folder, 0o555);
        return path.join(folder, "home");
      },
    ],
  ];

  test.each(cases)("%s is ENV_SETUP_FAILED naming the folder and the fix, from ensurePythonEnvironment and load()", async (what, make) => {
    if (what.includes("/proc") && process.platform !== "linux") return;
    const home = await make();
    // root writes into a read-only folder all the same.
    if (what.includes("EACCES") && process.getuid?.() === 0) return;
    const base = await fakeBasePython(path.join(dir, "base"));
    for (const call of [() => ensurePythonEnvironment({ home, basePython: base.python }), () => Idefics2.load({ home })]) {
      const error = await rejection(call());
      expect(error.code).toBe("ENV_SETUP_FAILED");
      expect(error.message).toMatch(
        new RegExp(`^Cannot write the managed environment under ${home.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: E[A-Z]+ at `),
      );
      expect(error.fix).toMatch(/IDEFICS2_HOME \(or the `home` option\)/);
    }
  });
});

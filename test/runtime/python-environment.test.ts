import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { PythonEnvironmentError } from "../../src/errors.js";
import { ensurePythonEnvironment } from "../../src/runtime/python-environment.js";
import { requirementsFile } from "../../src/runtime/requirement-pins.js";
import type { SetupProgress } from "../../src/runtime/setup-progress.js";
import { fakeBasePython, fakePython, goodVersions } from "./fake-python.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "idefics2-env-"));
  vi.stubEnv("IDEFICS2_PYTHON", "");
  vi.stubEnv("IDEFICS2_HOME", "");
});
afterEach(async () => {
  vi.unstubAllEnvs();
  await rm(dir, { recursive: true, force: true });
});

async function lines(file: string): Promise<string[]> {
  return (await readFile(file, "utf8").catch(() => "")).split("\n").filter(Boolean);
}

async function rejection(promise: Promise<unknown>): Promise<PythonEnvironmentError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(PythonEnvironmentError);
  return error as PythonEnvironmentError;
}

describe("interpreter resolution", () => {
  test("the python option beats IDEFICS2_PYTHON, which beats the managed environment", async () => {
    const option = await fakePython(path.join(dir, "option"), goodVersions);
    const fromEnv = await fakePython(path.join(dir, "env"), goodVersions);
    const base = await fakeBasePython(path.join(dir, "base"));
    const home = path.join(dir, "home");

    vi.stubEnv("IDEFICS2_PYTHON", fromEnv);
    expect(await ensurePythonEnvironment({ python: option, home, basePython: base.python })).toEqual({
      python: option,
      source: "option",
      versions: goodVersions,
    });
    expect(await ensurePythonEnvironment({ home, basePython: base.python })).toMatchObject({ python: fromEnv, source: "env" });

    vi.stubEnv("IDEFICS2_PYTHON", "");
    const managed = await ensurePythonEnvironment({ home, basePython: base.python });
    expect(managed).toEqual({
      python: expect.stringMatching(/\/envs\/[0-9a-f]{16}\/bin\/python$/),
      source: "managed",
      versions: goodVersions,
    });
    expect(managed.python.startsWith(path.join(home, "envs"))).toBe(true);
  });

  test("IDEFICS2_HOME places the managed environment when no home option is given", async () => {
    const base = await fakeBasePython(path.join(dir, "base"));
    vi.stubEnv("IDEFICS2_HOME", path.join(dir, "from-env-home"));
    const managed = await ensurePythonEnvironment({ basePython: base.python });
    expect(managed.python.startsWith(path.join(dir, "from-env-home", "envs"))).toBe(true);
  });

  test.each([
    ["option", { python: "/nonexistent/idefics2/python" }, "from the `python` option"],
    ["env", {}, "from IDEFICS2_PYTHON"],
  ] as const)("a missing interpreter given by %s is PYTHON_NOT_FOUND naming the path and its origin", async (_, options, origin) => {
    vi.stubEnv("IDEFICS2_PYTHON", "/nonexistent/idefics2/python");
    const error = await rejection(ensurePythonEnvironment(options));
    expect(error.code).toBe("PYTHON_NOT_FOUND");
    expect(error.message).toContain("/nonexistent/idefics2/python");
    expect(error.message).toContain(origin);
  });

  test("a file that is not a working interpreter is PYTHON_NOT_FOUND", async () => {
    const broken = path.join(dir, "python");
    await writeFile(broken, "#!/bin/sh\necho 'not json'\nexit 3\n", { mode: 0o755 });
    const error = await rejection(ensurePythonEnvironment({ python: broken }));
    expect(error.code).toBe("PYTHON_NOT_FOUND");
    expect(error.message).toContain(broken);
  });

  test("an old Python is PYTHON_TOO_OLD naming the version and the path", async () => {
    const old = await fakePython(dir, { ...goodVersions, python: "3.8.10" });
    const error = await rejection(ensurePythonEnvironment({ python: old }));
    expect(error.code).toBe("PYTHON_TOO_OLD");
    expect(error.message).toBe(`Python 3.8.10 at ${old} (from the \`python\` option) is too old: idefics2 needs Python 3.10 or newer`);
  });

  test("missing packages are MISSING_PYTHON_PACKAGE naming each one and the pip command", async () => {
    const bare = await fakePython(dir, { ...goodVersions, torch: null, transformers: "4.44.0", safetensors: null, bitsandbytes: null });
    const error = await rejection(ensurePythonEnvironment({ python: bare }));
    expect(error.code).toBe("MISSING_PYTHON_PACKAGE");
    expect(error.message).toBe(`Python at ${bare} (from the \`python\` option) lacks torch, transformers>=5.0 (found 4.44.0), safetensors`);
    expect(error.fix).toBe(`Run: ${bare} -m pip install torch transformers==5.17.0 safetensors==0.8.0`);
  });

  test("an invalid option is rejected naming the option and the value", async () => {
    await expect(ensurePythonEnvironment({ python: "" })).rejects.toThrow(
      "Expected the `python` option to be a non-empty string, got `` (string)",
    );
  });

  test("an aborted signal stops before any process starts", async () => {
    const reason = new Error("stop");
    await expect(ensurePythonEnvironment({ python: "/x", signal: AbortSignal.abort(reason) })).rejects.toMatchObject({
      code: "ABORTED",
      cause: reason,
    });
  });
});

describe("the managed environment", () => {
  test("is created once, reported stage by stage with pip's lines, then reused without pip", async () => {
    const base = await fakeBasePython(dir);
    const home = path.join(dir, "home");
    const events: SetupProgress[] = [];
    const first = await ensurePythonEnvironment({ home, basePython: base.python, onProgress: (event) => events.push(event) });
    expect(events.filter((event) => event.type === "stage").map((event) => event.stage)).toEqual([
      "probe",
      "venv",
      "pip",
      "verify",
      "ready",
    ]);
    expect(events.filter((event) => event.type === "log").map((event) => event.message)).toEqual([
      "Collecting torch==2.13.0",
      "Successfully installed torch-2.13.0",
    ]);
    const marker = JSON.parse(await readFile(path.join(path.dirname(path.dirname(first.python)), "ready.json"), "utf8"));
    expect(marker).toMatchObject({ versions: goodVersions, requirements: expect.stringMatching(/python\/requirements\.txt$/) });
    await expect(readFile(path.join(path.dirname(path.dirname(first.python)), "dev-ready.json"))).rejects.toMatchObject({ code: "ENOENT" });

    const reuseEvents: SetupProgress[] = [];
    const started = performance.now();
    const second = await ensurePythonEnvironment({ home, basePython: base.python, onProgress: (event) => reuseEvents.push(event) });
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(second).toEqual(first);
    expect(reuseEvents.map((event) => event.stage)).toEqual(["probe", "reuse"]);
    expect(await lines(base.installs)).toHaveLength(1);
  });

  test("dev installs requirements-dev.txt into the same environment once; dev: false then reuses it", async () => {
    const base = await fakeBasePython(dir);
    const home = path.join(dir, "home");
    const runtime = await ensurePythonEnvironment({ home, basePython: base.python });
    const envDir = path.dirname(path.dirname(runtime.python));

    const events: SetupProgress[] = [];
    const dev = await ensurePythonEnvironment({ home, basePython: base.python, dev: true, onProgress: (event) => events.push(event) });
    expect(dev).toEqual(runtime);
    expect(events.filter((event) => event.type === "stage").map((event) => event.stage)).toEqual([
      "probe",
      "reuse",
      "dev-extras",
      "verify",
      "ready",
    ]);
    expect(events.filter((event) => event.type === "log")).toEqual([
      { type: "log", stage: "dev-extras", message: "Requirement already satisfied: torch==2.13.0", elapsedMs: expect.any(Number) },
      { type: "log", stage: "dev-extras", message: "Successfully installed pytest-9.2.0 ruff-0.17.6", elapsedMs: expect.any(Number) },
    ]);
    expect(await lines(base.installs)).toEqual([`${envDir} requirements.txt`, `${envDir} requirements-dev.txt`]);
    const devText = await readFile(requirementsFile(true), "utf8");
    expect(JSON.parse(await readFile(path.join(envDir, "dev-ready.json"), "utf8"))).toMatchObject({
      hash: path.basename(envDir),
      devRequirements: createHash("sha256").update(devText).digest("hex"),
      requirements: expect.stringMatching(/python\/requirements-dev\.txt$/),
      versions: goodVersions,
    });

    for (const options of [{ dev: true }, { dev: false }, {}]) {
      const reuseEvents: SetupProgress[] = [];
      expect(
        await ensurePythonEnvironment({ home, basePython: base.python, ...options, onProgress: (event) => reuseEvents.push(event) }),
      ).toEqual(runtime);
      expect(reuseEvents.map((event) => event.stage)).toEqual(["probe", "reuse"]);
    }
    expect(await lines(base.installs)).toHaveLength(2);
    expect(await lines(base.venvs)).toEqual([envDir]);
    expect(await readdir(path.join(home, "envs"))).toEqual([path.basename(envDir)]);
  });

  test("dev on a fresh home creates the runtime environment then adds the extras; a concurrent dev call waits and reuses both", async () => {
    const base = await fakeBasePython(dir, 1);
    const home = path.join(dir, "home");
    const events: [SetupProgress[], SetupProgress[]] = [[], []];
    const setup = (log: SetupProgress[]) =>
      ensurePythonEnvironment({ home, basePython: base.python, dev: true, onProgress: (event) => log.push(event) });
    const [a, b] = await Promise.all([setup(events[0]), setup(events[1])]);
    expect(a).toEqual(b);
    const envDir = path.dirname(path.dirname(a.python));
    expect(await lines(base.venvs)).toEqual([envDir]);
    expect(await lines(base.installs)).toEqual([`${envDir} requirements.txt`, `${envDir} requirements-dev.txt`]);
    const stages = events.map((log) => log.filter((event) => event.type === "stage").map((event) => event.stage));
    expect(stages).toContainEqual(["probe", "venv", "pip", "verify", "dev-extras", "verify", "ready"]);
    expect(stages.filter((list) => list.includes("wait-lock") && list.at(-1) === "reuse")).toHaveLength(1);
    expect(await ensurePythonEnvironment({ home, basePython: base.python })).toEqual(a);
    expect(await lines(base.installs)).toHaveLength(2);
  });

  test("a failed, interrupted or outdated dev install leaves the runtime environment usable and is done again next time", async () => {
    const base = await fakeBasePython(dir);
    const home = path.join(dir, "home");
    const runtime = await ensurePythonEnvironment({ home, basePython: base.python });
    const envDir = path.dirname(path.dirname(runtime.python));

    await writeFile(path.join(dir, "fail-dev"), "");
    const error = await rejection(ensurePythonEnvironment({ home, basePython: base.python, dev: true }));
    expect(error.code).toBe("ENV_SETUP_FAILED");
    expect(error.message).toMatch(/requirements-dev\.txt failed: ERROR: No matching distribution found for pytest==9\.2\.0$/);
    expect(error.fix).toContain("idefics2 setup --dev");
    expect(await ensurePythonEnvironment({ home, basePython: base.python })).toEqual(runtime);
    expect(await lines(base.installs)).toHaveLength(1);
    await rm(path.join(dir, "fail-dev"));

    expect(await ensurePythonEnvironment({ home, basePython: base.python, dev: true })).toEqual(runtime);
    expect(await lines(base.installs)).toEqual([`${envDir} requirements.txt`, `${envDir} requirements-dev.txt`]);

    // A crash after pip and before the marker; then a marker for another requirements-dev.txt.
    const markerFile = path.join(envDir, "dev-ready.json");
    const marker = JSON.parse(await readFile(markerFile, "utf8"));
    await rm(markerFile);
    expect(await ensurePythonEnvironment({ home, basePython: base.python, dev: true })).toEqual(runtime);
    await writeFile(markerFile, JSON.stringify({ ...marker, devRequirements: "0".repeat(64) }));
    const events: SetupProgress[] = [];
    expect(await ensurePythonEnvironment({ home, basePython: base.python, dev: true, onProgress: (event) => events.push(event) })).toEqual(
      runtime,
    );
    expect(events.map((event) => event.stage)).not.toContain("cleanup");
    expect(await lines(base.installs)).toEqual([`${envDir} requirements.txt`, ...Array(3).fill(`${envDir} requirements-dev.txt`)]);
    expect(await lines(base.venvs)).toHaveLength(1);
    expect(JSON.parse(await readFile(markerFile, "utf8")).devRequirements).toBe(marker.devRequirements);
  });

  test("create: false with dev reports missing extras as ENV_SETUP_FAILED with the setup --dev command, without pip", async () => {
    const base = await fakeBasePython(dir);
    const home = path.join(dir, "home");
    await ensurePythonEnvironment({ home, basePython: base.python });
    const error = await rejection(ensurePythonEnvironment({ home, basePython: base.python, dev: true, create: false }));
    expect(error.code).toBe("ENV_SETUP_FAILED");
    expect(error.message).toContain("lacks the development tools");
    expect(error.fix).toContain("idefics2 setup --dev");
    expect(await lines(base.installs)).toHaveLength(1);
    expect(await ensurePythonEnvironment({ home, basePython: base.python, create: false })).toMatchObject({ source: "managed" });
  });

  test("two concurrent calls on one fresh home create it once; the second waits for the lock", async () => {
    const base = await fakeBasePython(dir, 1);
    const home = path.join(dir, "home");
    const events: SetupProgress[][] = [[], []];
    const [a, b] = await Promise.all(
      events.map((log) => ensurePythonEnvironment({ home, basePython: base.python, onProgress: (event) => log.push(event) })),
    );
    expect(a).toEqual(b);
    expect(await lines(base.venvs)).toHaveLength(1);
    expect(await lines(base.installs)).toHaveLength(1);
    const stages = events.map((log) => log.map((event) => event.stage));
    expect(stages.filter((list) => list.includes("wait-lock") && list.at(-1) === "reuse")).toHaveLength(1);
  });

  test("a half-made environment without its marker is deleted and rebuilt", async () => {
    const base = await fakeBasePython(dir);
    const home = path.join(dir, "home");
    const made = await ensurePythonEnvironment({ home, basePython: base.python });
    const envDir = path.dirname(path.dirname(made.python));
    await rm(path.join(envDir, "ready.json"));
    await writeFile(path.join(envDir, "leftover"), "from an interrupted install");

    const events: SetupProgress[] = [];
    expect(await ensurePythonEnvironment({ home, basePython: base.python, onProgress: (event) => events.push(event) })).toEqual(made);
    expect(events.map((event) => event.stage)).toContain("cleanup");
    await expect(readFile(path.join(envDir, "leftover"))).rejects.toMatchObject({ code: "ENOENT" });
    expect(await lines(base.installs)).toHaveLength(2);
  });

  test("a failing pip install is ENV_SETUP_FAILED with pip's last line, and leaves nothing behind", async () => {
    const base = await fakeBasePython(dir);
    await writeFile(path.join(dir, "venv-python"), "#!/bin/sh\necho 'ERROR: No matching distribution found for torch==2.13.0'\nexit 1\n");
    const home = path.join(dir, "home");
    const error = await rejection(ensurePythonEnvironment({ home, basePython: base.python }));
    expect(error.code).toBe("ENV_SETUP_FAILED");
    expect(error.message).toMatch(/requirements\.txt failed: ERROR: No matching distribution found for torch==2\.13\.0$/);
    expect(await readdir(path.join(home, "envs"))).toEqual([]);
    // pip's whole output is kept in the set-up's log, which the fix names.
    const [log] = await readdir(path.join(home, "logs"));
    const logFile = path.join(home, "logs", log as string);
    expect(log).toMatch(/^setup-[0-9a-f]{16}\.log$/);
    expect(error.fix).toContain(`The step's whole output is in ${logFile}.`);
    expect(await readFile(logFile, "utf8")).toMatch(
      /^\$ .* -m pip install .* -r .*requirements\.txt\nERROR: No matching distribution found for torch==2\.13\.0\n/m,
    );
  });

  test("aborting during pip stops it, removes the unfinished environment and frees the lock", async () => {
    const base = await fakeBasePython(dir, 10);
    const home = path.join(dir, "home");
    const controller = new AbortController();
    const reason = new Error("user gave up");
    const started = performance.now();
    const setup = ensurePythonEnvironment({
      home,
      basePython: base.python,
      signal: controller.signal,
      onProgress: (event) => {
        if (event.type === "log") controller.abort(reason);
      },
    });
    await expect(setup).rejects.toMatchObject({ name: "AbortError", code: "ABORTED", cause: reason });
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(await readdir(path.join(home, "envs"))).toEqual([]);
  });

  test("an old base interpreter is PYTHON_TOO_OLD before anything is created", async () => {
    const old = await fakePython(dir, { ...goodVersions, python: "3.9.18" });
    const error = await rejection(ensurePythonEnvironment({ home: path.join(dir, "home"), basePython: old }));
    expect(error.code).toBe("PYTHON_TOO_OLD");
    expect(error.message).toContain("3.9.18");
  });
});

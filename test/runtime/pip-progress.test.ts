import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { PythonEnvironmentError } from "../../src/errors.js";
import { runPip, venvPython } from "../../src/runtime/managed-environment.js";
import { pipProgressReader } from "../../src/runtime/pip-progress.js";
import type { SetupProgress } from "../../src/runtime/setup-progress.js";

type Count = Extract<SetupProgress, { type: "progress" }>;
const counts = (events: SetupProgress[]) => events.filter((event): event is Count => event.type === "progress");

describe("pip's raw progress, read into counts", () => {
  // Captured from a real `pip install --progress-bar raw -r python/requirements.txt` (pip 26.2.1, empty cache,
  // stdout and stderr together): 42 packages, 8 of them downloaded in 512 KiB or more.
  test("a real install's output gives each download's bytes, the packages found, then the packages installed", async () => {
    const lines = (await readFile(path.join(import.meta.dirname, "..", "fixtures", "pip", "raw-install.txt"), "utf8")).split("\n");
    const events: Omit<Count, "elapsedMs">[] = [];
    const read = pipProgressReader("pip", (event) => events.push(event));
    const kinds = lines.map(read);
    // Exactly the raw lines are counts (never logged); every other line stays a log line.
    expect(lines.filter((_, index) => kinds[index] === "count")).toEqual(lines.filter((line) => /^Progress \d+ of \d+$/.test(line)));

    const bytes = events.filter((event) => event.unit === "bytes");
    const files = [...new Set(bytes.map((event) => event.message))];
    expect(files).toHaveLength(8);
    expect(files[0]).toBe("Downloading bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl");
    expect(bytes.filter((event) => event.message === files[0]).map((event) => [event.done, event.total])).toEqual([
      [0, 43139553],
      [262144, 43139553],
      [43139553, 43139553],
    ]);
    for (const file of files) {
      const of = bytes.filter((event) => event.message === file);
      expect(of.map((event) => event.done)).toEqual([...of.map((event) => event.done)].sort((a, b) => a - b));
      expect(of.at(-1)?.done).toBe(of.at(-1)?.total);
      expect(of.at(-1)?.total).toBeGreaterThanOrEqual(512 * 1024);
    }

    const items = events.filter((event) => event.unit === "items");
    const found = items.filter((event) => event.message.startsWith("Collecting "));
    expect(found.map((event) => event.done)).toEqual(Array.from({ length: 42 }, (_, index) => index + 1));
    expect(found.every((event) => event.total === undefined)).toBe(true);
    expect(found[0]?.message).toBe("Collecting torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl");
    expect(found[2]?.message).toBe("Collecting bitsandbytes==0.50.2");
    expect(items.slice(-2)).toEqual([
      { type: "progress", stage: "pip", message: "Installing 42 packages", done: 0, total: 42, unit: "items" },
      { type: "progress", stage: "pip", message: "Installed 42 packages", done: 42, total: 42, unit: "items" },
    ]);
    // In the order pip printed them: a file's bytes come after it was found, the installation last.
    const order = events.map((event) => event.message);
    expect(order.indexOf("Collecting bitsandbytes==0.50.2")).toBeLessThan(order.indexOf(files[0] as string));
    expect(order.lastIndexOf(files.at(-1) as string)).toBeLessThan(order.indexOf("Installing 42 packages"));
  });

  test("a download of unknown size counts bytes without a total", () => {
    const events: Omit<Count, "elapsedMs">[] = [];
    const read = pipProgressReader("dev-extras", (event) => events.push(event));
    for (const line of ["Collecting x", "  Downloading https://example.org/x-1.0.tar.gz", "Progress 0 of 0", "Progress 2048 of 0"])
      read(line);
    expect(events.slice(1)).toEqual([
      { type: "progress", stage: "dev-extras", message: "Downloading x-1.0.tar.gz", done: 0, unit: "bytes" },
      { type: "progress", stage: "dev-extras", message: "Downloading x-1.0.tar.gz", done: 2048, unit: "bytes" },
    ]);
  });
});

// A real venv (the base python3's pip, 23.2 here), upgraded to the pinned pip, then a real download from the index:
// PyYAML's 828 kB wheel, over pip's 512 KiB threshold for raw progress, with pip's cache off so it is fetched.
describe("pip install into a real environment", () => {
  let dir: string;
  let python: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "idefics2-pip-"));
    await execa("python3", ["-m", "venv", path.join(dir, "env")]);
    python = venvPython(path.join(dir, "env"));
  }, 120_000);
  afterAll(async () => {
    vi.unstubAllEnvs();
    await rm(dir, { recursive: true, force: true });
  });

  test("upgrades pip first, then reports the download's bytes and the packages as counts, pip's output in the log", async () => {
    vi.stubEnv("PIP_NO_CACHE_DIR", "1");
    const events: SetupProgress[] = [];
    const started = performance.now();
    const logFile = path.join(dir, "setup.log");
    const onProgress = (event: Omit<SetupProgress, "elapsedMs">) =>
      events.push({ ...event, elapsedMs: Math.round(performance.now() - started) } as SetupProgress);
    const run = { onProgress, logFile, pip: {} };
    await runPip(python, ["pyyaml==6.0.4"], "pip", "Installing PyYAML", "", run);

    const [upgrading, upgraded, ...rest] = counts(events);
    expect(upgrading).toMatchObject({ message: "Upgrading pip to 26.2.1", done: 0, total: 1, unit: "items" });
    expect(upgraded).toMatchObject({ message: "Upgrading pip to 26.2.1", done: 1, total: 1, unit: "items" });
    expect((await execa(python, ["-m", "pip", "--version"])).stdout).toMatch(/^pip 26\.2\.1 /);

    expect(rest[0]).toMatchObject({ message: "Collecting pyyaml==6.0.4", done: 1, unit: "items" });
    const bytes = rest.filter((event) => event.unit === "bytes");
    expect(bytes.length).toBeGreaterThanOrEqual(2);
    expect(new Set(bytes.map((event) => event.message))).toEqual(new Set([expect.stringMatching(/^Downloading pyyaml-6\.0\.4-.*\.whl$/)]));
    const total = bytes[0]?.total as number;
    expect(total).toBeGreaterThan(512 * 1024);
    expect(bytes.map((event) => [event.done, event.total])).toEqual(
      [...bytes.map((event) => [event.done, event.total])].sort((a, b) => (a[0] as number) - (b[0] as number)),
    );
    expect(bytes[0]?.done).toBe(0);
    expect(bytes.at(-1)?.done).toBe(total);
    expect(rest.slice(-2).map(({ message, done, total }) => [message, done, total])).toEqual([
      ["Installing 1 package", 0, 1],
      ["Installed 1 package", 1, 1],
    ]);
    expect(events.map((event) => event.elapsedMs)).toEqual([...events.map((event) => event.elapsedMs)].sort((a, b) => a - b));
    // pip's lines are `log` events, its raw counts are not; the log file has all of them.
    const logged = events.filter((event) => event.type === "log").map((event) => event.message);
    expect(logged.some((line) => line.startsWith("Progress "))).toBe(false);
    expect(logged).toContainEqual(expect.stringMatching(/^Successfully installed pyyaml-6\.0\.4$/i));
    const log = await readFile(logFile, "utf8");
    expect(log).toMatch(/^\$ .*python -m pip install .*--progress-bar off -r .*requirements-pip\.txt$/m);
    expect(log).toMatch(/^\$ .*python -m pip install .*--progress-bar raw pyyaml==6\.0\.4$/m);
    expect(log).toContain(`Progress ${total} of ${total}`);
    expect(log).toMatch(/^Successfully installed pyyaml-6\.0\.4$/im);

    // A failing install names the log file in its fix; the next run of the same set-up does not upgrade again.
    const failed = await runPip(python, ["pyyaml==0.0.1"], "pip", "Installing PyYAML 0.0.1", "Check the pin.", run).catch(
      (error: unknown) => error,
    );
    expect(failed).toBeInstanceOf(PythonEnvironmentError);
    expect((failed as PythonEnvironmentError).message).toMatch(
      /^Installing PyYAML 0\.0\.1 failed: ERROR: No matching distribution found for pyyaml==0\.0\.1/,
    );
    expect((failed as PythonEnvironmentError).fix).toBe(`Check the pin. The step's whole output is in ${logFile}.`);
    expect(counts(events).filter((event) => event.message.startsWith("Upgrading pip"))).toHaveLength(2);
  }, 180_000);
});

import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, test, vi } from "vitest";
import { packageRoot } from "../../src/runtime/package-root.js";
import { probePythonVersions, PythonVersions } from "../../src/runtime/python-versions.js";
import { runProbe } from "../../src/runtime/run-probe.js";
import { testPython } from "../helpers/python.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "idefics2-probe-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

test.each([
  ["env", true],
  ["managed", false],
] as const)(
  "a probe from source %s runs module idefics2_worker.probe.<name> safely, in python/, with the worker's PYTHONPATH",
  async (source, inherits) => {
    const recorder = path.join(dir, `python-${source}`);
    const record = path.join(dir, `record-${source}`);
    await writeFile(recorder, `#!/bin/sh\nprintf '%s\\n' "$1" "$3" "$4" "$PYTHONPATH" "$PWD" > '${record}'\n`, { mode: 0o755 });
    // Relative and empty PYTHONPATH entries mean the current folder: never passed on.
    vi.stubEnv("PYTHONPATH", ["/opt/extra-site", "", "relative/site", "."].join(path.delimiter));
    const result = await runProbe({ python: recorder, source }, "versions", { timeoutMs: 10_000, args: ["--files"] }).finally(() =>
      vi.unstubAllEnvs(),
    );
    expect(result.exitCode).toBe(0);
    const own = path.join(packageRoot(), "python");
    expect((await readFile(record, "utf8")).split("\n")).toEqual([
      "-c",
      "idefics2_worker.probe.versions",
      "--files",
      inherits ? `${own}${path.delimiter}/opt/extra-site` : own,
      own,
      "",
    ]);
  },
);

test("the versions probe answers on the suite's interpreter with the packages the worker needs", async () => {
  const versions = PythonVersions.parse(await probePythonVersions(testPython(), { source: "option" }));
  expect(versions).toMatchObject({ python: expect.stringMatching(/^3\.\d+\.\d+$/), transformers: expect.stringMatching(/^5\./) });
  expect([versions.torch, versions.accelerate, versions.pillow, versions.safetensors]).not.toContain(null);
});

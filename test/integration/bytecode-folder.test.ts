import { readdirSync, readFileSync } from "node:fs";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { user } from "../../src/messages.js";
import { Idefics2 } from "../../src/model.js";
import { testPython } from "../helpers/python.js";

// An interpreter whose torch and transformers were never compiled (pip run with PYTHONDONTWRITEBYTECODE, as on the
// H200 machine): the suite's real interpreter behind a script whose versions probe says so. The probe's own check
// runs in python/tests/probe; this is what the SDK does with its answer.
let folder: string;
let python: string;
beforeAll(async () => {
  folder = await mkdtemp(path.join(tmpdir(), "idefics2-uncompiled-"));
  python = path.join(folder, "python");
  const probe = "idefics2_worker.probe.versions";
  await writeFile(
    python,
    `#!/bin/sh\nif [ "$3" = "${probe}" ]; then "${testPython()}" "$@" | sed 's/"compiled": true/"compiled": false/'; else exec "${testPython()}" "$@"; fi\n`,
  );
  await chmod(python, 0o755);
});
afterAll(async () => {
  await rm(folder, { recursive: true, force: true });
});

function workerEnvironment(pid: number): string[] {
  return readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
}

test.runIf(process.platform === "linux")(
  "a first load lists its sources and writes no bytecode, a warm-up compiles them in the background, and the next load's worker reads them from the home",
  async () => {
    const home = path.join(folder, "home");
    const bytecode = path.join(home, "bytecode");
    let engineSource = "";
    const first = await Idefics2.load({ python, home });
    try {
      expect(workerEnvironment(first.workerPid)).toContain("PYTHONDONTWRITEBYTECODE=1");
      const listed = readdirSync(bytecode).find((name) => name.startsWith("sources-"));
      const sources: string[] = JSON.parse(readFileSync(path.join(bytecode, listed ?? ""), "utf8"));
      engineSource = sources.find((source) => source.endsWith(path.join("idefics2_worker", "engine", "engine.py"))) ?? "";
      expect(engineSource).not.toBe("");
      expect(sources.some((source) => source.endsWith(path.join("torch", "__init__.py")))).toBe(true);
      expect((await first.generate([user("Say hi.")], { maxNewTokens: 3 })).tokenIds.length).toBeGreaterThan(0);
    } finally {
      await first.close();
    }
    const deadline = Date.now() + 240_000;
    const marker = () => readdirSync(bytecode).find((name) => name.startsWith("warm-"));
    while (!marker() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 250));
    const written = JSON.parse(readFileSync(path.join(bytecode, marker() ?? ""), "utf8"));
    expect(written.compiled).toBeGreaterThan(100);
    expect(written.compiled + written.present).toBeLessThanOrEqual(written.listed);
    // The folder mirrors each source's path: <bytecode>/<the source's folder>/engine.cpython-3xx.pyc.
    const engineBytecode = readdirSync(path.join(bytecode, path.dirname(engineSource)));
    expect(engineBytecode.some((name) => /^engine\.cpython-\d+\.pyc$/.test(name))).toBe(true);

    const second = await Idefics2.load({ python, home });
    try {
      const environment = workerEnvironment(second.workerPid);
      expect(environment).toContain(`PYTHONPYCACHEPREFIX=${bytecode}`);
      expect(environment.some((entry) => entry.startsWith("PYTHONDONTWRITEBYTECODE="))).toBe(false);
    } finally {
      await second.close();
    }
  },
  420_000,
);

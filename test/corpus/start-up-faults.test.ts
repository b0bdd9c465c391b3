import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { type Idefics2Error, PythonEnvironmentError, TimeoutError } from "../../src/errors.js";
import { Idefics2 } from "../../src/model.js";
import { stillRunning } from "../worker/process-state.js";

// An interpreter that misbehaves at start (IDEFICS2_PYTHON or the `python` option pointing at it): load() settles
// with a typed error within startupTimeoutMs (and a little), and every process it started has ended by then.

const fixture = fileURLToPath(new URL("../fixtures/workers/misbehaving_interpreter.sh", import.meta.url));

// A copy of the fixture in a fresh folder, with its mode beside it; `pids` lists every process it started.
function interpreter(mode: "silent-probe" | "stalled-worker"): { python: string; pids: () => number[] } {
  const folder = mkdtempSync(join(tmpdir(), "idefics2-interpreter-"));
  const python = join(folder, "python");
  copyFileSync(fixture, python);
  writeFileSync(join(folder, "mode"), mode);
  const pids = () => {
    try {
      return readFileSync(join(folder, "pids"), "utf8").split(/\s+/).filter(Boolean).map(Number);
    } catch {
      return [];
    }
  };
  return { python, pids };
}

const savedEnv = process.env.IDEFICS2_PYTHON;
afterEach(() => {
  if (savedEnv === undefined) delete process.env.IDEFICS2_PYTHON;
  else process.env.IDEFICS2_PYTHON = savedEnv;
});

async function load(python: string, how: "option" | "IDEFICS2_PYTHON"): Promise<{ error: Idefics2Error; ms: number }> {
  const started = performance.now();
  if (how === "IDEFICS2_PYTHON") process.env.IDEFICS2_PYTHON = python;
  const outcome = await Idefics2.load({ ...(how === "option" ? { python } : {}), startupTimeoutMs: 1500 }).then(
    async (model) => {
      await model.close();
      return new Error("loaded") as Idefics2Error;
    },
    (error: unknown) => error as Idefics2Error,
  );
  return { error: outcome, ms: performance.now() - started };
}

describe("an interpreter that misbehaves at start", { timeout: 20_000 }, () => {
  it.each(["option", "IDEFICS2_PYTHON"] as const)(
    "one whose versions probe never answers while a child holds its output (%s): a typed error within startupTimeoutMs, no process left",
    async (how) => {
      const { python, pids } = interpreter("silent-probe");
      const { error, ms } = await load(python, how);
      expect(error).toBeInstanceOf(PythonEnvironmentError);
      expect(error.message).toMatch(/is not a working Python interpreter/);
      expect(ms).toBeLessThan(4000);
      expect(pids()).toHaveLength(2);
      expect(await stillRunning(pids())).toEqual([]);
    },
  );

  it("one whose worker keeps a child and sends 10 bytes of a 16 MiB frame instead of ready: TimeoutError, no process left", async () => {
    const { python, pids } = interpreter("stalled-worker");
    const { error, ms } = await load(python, "option");
    expect(error).toBeInstanceOf(TimeoutError);
    expect(error.message).toMatch(/did not start within 1500 ms/);
    expect(ms).toBeLessThan(4000);
    expect(pids()).toHaveLength(2);
    expect(await stillRunning(pids())).toEqual([]);
  });
});

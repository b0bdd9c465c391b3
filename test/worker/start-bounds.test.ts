import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { TimeoutError } from "../../src/errors.js";
import type { LoadParams } from "../../src/protocol/messages.js";
import { startLoadedWorker } from "../../src/worker/start-loaded-worker.js";
import { WorkerProcess } from "../../src/worker/worker-process.js";
import { testPython } from "../helpers/python.js";
import { pidsIn, stillRunning } from "./process-state.js";

// Every step of a worker's start is bounded, and a step that runs out of time ends the worker's whole process tree,
// even when the worker (a misbehaving interpreter) never made itself a process group leader.

const script = fileURLToPath(new URL("../fixtures/workers/scripted_worker.py", import.meta.url));

function launch(mode: string) {
  return { file: testPython(), args: [script], env: { FIXTURE_MODE: mode, PATH: process.env.PATH ?? "" } };
}

// The fixture ignores load params; the load call only has to be sent.
const loadParams = { model: "/nowhere" } as LoadParams;

async function timed(promise: Promise<unknown>): Promise<{ outcome: unknown; ms: number }> {
  const started = performance.now();
  const outcome = await promise.then(
    (value) => value,
    (error: unknown) => error,
  );
  return { outcome, ms: performance.now() - started };
}

describe("worker start-up bounds", { timeout: 15_000 }, () => {
  it("a worker that keeps a child and sends 10 bytes of a 16 MiB frame instead of ready: TimeoutError on time, no process left", async () => {
    const lines: string[] = [];
    const { outcome, ms } = await timed(
      WorkerProcess.start(launch("stall-at-start"), { startupTimeoutMs: 1500, onStderr: (line) => lines.push(line) }),
    );
    expect(outcome).toBeInstanceOf(TimeoutError);
    expect(ms).toBeLessThan(3000);
    const pids = pidsIn(lines);
    expect(pids).toHaveLength(2);
    expect(await stillRunning(pids)).toEqual([]);
  });

  it("a load during which the worker keeps a child and sends 10 bytes of a 16 MiB frame: TimeoutError after loadTimeoutMs, no process left", async () => {
    const lines: string[] = [];
    const { outcome, ms } = await timed(
      startLoadedWorker(launch("stall-on-load"), loadParams, {
        startupTimeoutMs: 10_000,
        loadTimeoutMs: 1500,
        onStderr: (line) => lines.push(line),
      }),
    );
    expect(outcome).toBeInstanceOf(TimeoutError);
    expect((outcome as TimeoutError).message).toMatch(/did not load within 1500 ms/);
    expect(ms).toBeLessThan(3500);
    const pids = pidsIn(lines);
    expect(pids).toHaveLength(2);
    expect(await stillRunning(pids)).toEqual([]);
  });

  it("a worker stopped (SIGSTOP) during the load: TimeoutError after loadTimeoutMs, the worker ended", async () => {
    const stopped: number[] = [];
    const { outcome, ms } = await timed(
      startLoadedWorker(launch("slow-load"), loadParams, {
        startupTimeoutMs: 10_000,
        loadTimeoutMs: 2000,
        // The fixture names its pid once the load has started: stop it there, as the attack did.
        onStderr: (line) => {
          for (const pid of pidsIn([line])) {
            process.kill(pid, "SIGSTOP");
            stopped.push(pid);
          }
        },
      }),
    );
    expect(outcome).toBeInstanceOf(TimeoutError);
    expect(ms).toBeLessThan(4000);
    expect(stopped).toHaveLength(1);
    expect(await stillRunning(stopped)).toEqual([]);
  });
});

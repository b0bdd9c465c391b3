import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { InvalidInputError, ModelLoadError } from "../../src/errors.js";
import type { LoadParams } from "../../src/protocol/messages.js";
import { startLoadedWorker } from "../../src/worker/start-loaded-worker.js";
import { WorkerProcess } from "../../src/worker/worker-process.js";
import { testPython } from "../helpers/python.js";
import { stillRunning } from "./process-state.js";

// What the caller hands in (callbacks, a signal) can be wrong or can throw: the worker keeps serving, close() settles
// and ends it, and nothing the caller's code throws escapes as an uncaught exception that ends the whole program.

const script = fileURLToPath(new URL("../fixtures/workers/scripted_worker.py", import.meta.url));

function launch(mode: string) {
  return { file: testPython(), args: [script], env: { FIXTURE_MODE: mode, PATH: process.env.PATH ?? "" } };
}

function thrower(calls: string[]) {
  return (what: unknown) => {
    calls.push(typeof what === "string" ? what : JSON.stringify(what));
    throw new Error("a bug in the caller's callback");
  };
}

describe("the caller's callbacks and signal", { timeout: 15_000 }, () => {
  it("an onStderr that throws on every line: the worker keeps serving, its stderr tail is still kept", async () => {
    const lines: string[] = [];
    const worker = await WorkerProcess.start(launch("chatty"), { onStderr: thrower(lines) });
    try {
      await expect(worker.request("ping", {})).resolves.toEqual({ pong: true });
      await expect(worker.request("ping", {})).resolves.toEqual({ pong: true });
      const deadline = Date.now() + 2000;
      while (lines.length < 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(lines).toEqual(["fixture: ready", "fixture: ping request 1", "fixture: ping request 2"]);
    } finally {
      await worker.close();
    }
  });

  it("an onProgress that throws on the worker's load progress: load settles with the worker's own answer", async () => {
    const events: string[] = [];
    const error = await startLoadedWorker(launch("chatty"), { model: "/nowhere" } as LoadParams, {
      startupTimeoutMs: 10_000,
      loadTimeoutMs: 10_000,
      onProgress: thrower(events),
    }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ModelLoadError);
    expect(error).toMatchObject({ code: "MODEL_NOT_FOUND" });
    expect(events.some((event) => event.includes('"message":"loading"'))).toBe(true);
  });

  it("a signal that is not an AbortSignal: a typed error, then close() settles (twice) and ends the worker", async () => {
    const worker = await WorkerProcess.start(launch("normal"));
    const error = await worker.request("ping", {}, { signal: { aborted: false } as never }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(InvalidInputError);
    await expect(worker.request("ping", {})).resolves.toEqual({ pong: true });
    const started = performance.now();
    await worker.close();
    await worker.close();
    expect(performance.now() - started).toBeLessThan(3000);
    expect(await stillRunning([worker.pid])).toEqual([]);
  });
});

import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { AbortError, ClosedError, ModelLoadError, ProtocolError, TimeoutError, WorkerCrashedError } from "../../src/errors.js";
import type { GenerateParams } from "../../src/protocol/messages.js";
import { WorkerProcess } from "../../src/worker/worker-process.js";
import { testPython } from "../helpers/python.js";
import { textGenerateParams } from "../helpers/wire-params.js";

const script = fileURLToPath(new URL("../fixtures/workers/scripted_worker.py", import.meta.url));

function launch(mode: string) {
  return { file: testPython(), args: [script], env: { FIXTURE_MODE: mode, PATH: process.env.PATH ?? "" } };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function generateParams(maxNewTokens: number): GenerateParams {
  return textGenerateParams("hi", maxNewTokens);
}

describe("WorkerProcess", () => {
  it("starts, answers requests and streams events in order, with payload bytes delivered", async () => {
    const worker = await WorkerProcess.start(launch("normal"));
    try {
      expect(worker.pid).toBeGreaterThan(0);
      await expect(worker.request("ping", {})).resolves.toEqual({ pong: true });
      const deltas: string[] = [];
      const result = await worker.request("generate", generateParams(7), {
        payload: Buffer.alloc(12345),
        onEvent: (event) => event.event === "token" && deltas.push(event.data.text),
      });
      expect(deltas.join("")).toBe("abcdeab");
      expect(result.text).toBe("abcdeab|12345");
    } finally {
      await worker.close();
    }
  });

  it("serves many concurrent requests, each answered once with its own result", async () => {
    const worker = await WorkerProcess.start(launch("normal"));
    try {
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => worker.request("generate", generateParams(i + 1))));
      expect(results.map((result) => result.text.split("|")[0]?.length)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    } finally {
      await worker.close();
    }
  });

  it("rejects an aborted call at once with AbortError and keeps serving the next one", async () => {
    const worker = await WorkerProcess.start(launch("normal"));
    try {
      const controller = new AbortController();
      let tokens = 0;
      const running = worker.request("generate", generateParams(500), {
        signal: controller.signal,
        onEvent: () => {
          if (++tokens === 3) controller.abort(new Error("user pressed stop"));
        },
      });
      await expect(running).rejects.toBeInstanceOf(AbortError);
      await expect(running).rejects.toMatchObject({ code: "ABORTED", cause: new Error("user pressed stop") });
      expect(tokens).toBe(3);
      await expect(worker.request("generate", generateParams(2))).resolves.toMatchObject({ text: "ab|0" });
    } finally {
      await worker.close();
    }
  });

  it("times out a call with TimeoutError and cancels it in the worker", async () => {
    const worker = await WorkerProcess.start(launch("normal"));
    try {
      await expect(worker.request("generate", generateParams(500), { timeoutMs: 100 })).rejects.toBeInstanceOf(TimeoutError);
      await expect(worker.request("ping", {})).resolves.toEqual({ pong: true });
    } finally {
      await worker.close();
    }
  });

  it("maps a worker error frame to its typed error, keeping the Python traceback off the message", async () => {
    const worker = await WorkerProcess.start(launch("normal"));
    try {
      const error = await worker.request("load", {} as never).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(ModelLoadError);
      expect(error).toMatchObject({ code: "MODEL_NOT_FOUND", message: "no such model", fix: "check the path", pythonType: "OSError" });
      expect((error as ModelLoadError).pythonTraceback).toContain("Traceback");
    } finally {
      await worker.close();
    }
  });

  it("rejects every pending call at once when the worker dies, naming the exit code and stderr tail", async () => {
    const worker = await WorkerProcess.start(launch("crash-on-generate"));
    const started = Date.now();
    const calls = [worker.request("generate", generateParams(5)), worker.request("ping", {}), worker.request("ping", {})];
    const outcomes = await Promise.allSettled(calls);
    expect(Date.now() - started).toBeLessThan(2000);
    for (const outcome of outcomes) {
      expect(outcome.status).toBe("rejected");
      const reason = (outcome as PromiseRejectedResult).reason as WorkerCrashedError;
      expect(reason).toBeInstanceOf(WorkerCrashedError);
      expect(reason.exitCode).toBe(3);
      expect(reason.message).toContain("exited with code 3");
      expect(reason.message).toContain("CUDA out of memory");
    }
    await expect(worker.request("ping", {})).rejects.toBeInstanceOf(WorkerCrashedError);
    await worker.close();
  });

  it("fails start with WorkerCrashedError when the worker exits before ready", async () => {
    const error = await WorkerProcess.start(launch("exit-before-ready")).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(WorkerCrashedError);
    expect((error as WorkerCrashedError).exitCode).toBe(7);
    expect((error as WorkerCrashedError).stderrTail).toContain("No module named 'torch'");
  });

  it("fails start with TimeoutError when the worker never says ready, and kills it", async () => {
    await expect(WorkerProcess.start(launch("never-ready"), { startupTimeoutMs: 500 })).rejects.toBeInstanceOf(TimeoutError);
  });

  it("fails with ProtocolError when something other than frames reaches stdout", async () => {
    await expect(WorkerProcess.start(launch("garbage"), { startupTimeoutMs: 5000 })).rejects.toBeInstanceOf(ProtocolError);
  });

  it("refuses a worker that speaks another protocol version", async () => {
    await expect(WorkerProcess.start(launch("wrong-protocol"), { startupTimeoutMs: 5000 })).rejects.toThrow(/protocol 99/);
  });

  it("close rejects pending calls with ClosedError, ends the process, and is idempotent", async () => {
    const worker = await WorkerProcess.start(launch("normal"));
    const pending = expect(worker.request("generate", generateParams(500))).rejects.toBeInstanceOf(ClosedError);
    await worker.close();
    await pending;
    await worker.close();
    expect(() => process.kill(worker.pid, 0)).toThrow();
    await expect(worker.request("ping", {})).rejects.toBeInstanceOf(ClosedError);
  });

  it("close escalates to SIGTERM when the worker ignores shutdown", async () => {
    const worker = await WorkerProcess.start(launch("ignore-shutdown"));
    const started = Date.now();
    await worker.close();
    expect(Date.now() - started).toBeLessThan(9000);
    expect(() => process.kill(worker.pid, 0)).toThrow();
  });

  it("close ends the worker's whole process tree, not just the worker", async () => {
    const lines: string[] = [];
    const worker = await WorkerProcess.start(launch("child-and-ignore-shutdown"), { onStderr: (line) => lines.push(line) });
    const childPid = Number(/child pid (\d+)/.exec(lines.join("\n"))?.[1]);
    expect(childPid).toBeGreaterThan(0);
    expect(() => process.kill(childPid, 0)).not.toThrow();
    await worker.close();
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && isAlive(childPid)) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(isAlive(childPid)).toBe(false);
  });

  it("rejects a result that does not match its method's schema", async () => {
    const worker = await WorkerProcess.start(launch("normal"));
    try {
      await expect(worker.request("info", {})).rejects.toBeInstanceOf(ProtocolError);
    } finally {
      await worker.close();
    }
  });
});

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AbortError, GenerationError, type Idefics2Error, InvalidInputError, TimeoutError } from "../../src/errors.js";
import { image, system, text, user, type Messages } from "../../src/messages.js";
import { Idefics2 } from "../../src/model.js";
import { LoadOptions } from "../../src/options.js";
import type { LoadParams } from "../../src/protocol/messages.js";
import { workerCommand } from "../../src/runtime/worker-command.js";
import { WorkerProcess } from "../../src/worker/worker-process.js";
import { demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { stillRunning } from "../worker/process-state.js";

// The faults of issue 12 against one model on the embedded weights, loaded with callbacks that throw: every call
// settles within its bound with a typed error, no work outlives its call in the worker, and the model keeps serving.

const question = [user(image(demoSecond), "What colour is the shape?")];

let model: Idefics2;
const stderrLines: string[] = [];
const progressEvents: string[] = [];

beforeAll(async () => {
  model = await Idefics2.load({
    python: testPython(),
    // Callbacks that always throw: the program must neither crash nor notice (finding 15).
    onStderr: (line) => {
      stderrLines.push(line);
      throw new Error("a bug in onStderr");
    },
    onProgress: (event) => {
      progressEvents.push(event.stage);
      throw new Error("a bug in onProgress");
    },
  });
});

afterAll(async () => {
  await model?.close();
});

async function settle(call: () => Promise<unknown>): Promise<{ error: Idefics2Error | undefined; ms: number }> {
  const started = performance.now();
  const error = await call().then(
    () => undefined,
    (caught: unknown) => caught as Idefics2Error,
  );
  return { error, ms: performance.now() - started };
}

// The next ordinary request is answered within `ms`: the worker is not still busy with an earlier one.
async function servesWithin(ms: number): Promise<void> {
  const started = performance.now();
  const result = await model.generate(question, { maxNewTokens: 12 });
  expect(result.text.toLowerCase()).toContain("blue");
  expect(performance.now() - started).toBeLessThan(ms);
}

describe("a timed-out or aborted call stops its work in the worker", () => {
  const huge = "hello world ".repeat(1_250_000); // 15 MB
  const cases: [what: string, messages: Messages][] = [
    ["a 15 MB text part", [user(huge)]],
    ["150 text parts of 100 KB", [user(...Array.from({ length: 150 }, () => text("abcdefghij".repeat(10_000))))]],
    ["a 15 MB system turn before a picture", [system(huge), ...question]],
  ];
  it.each(cases)("%s with timeoutMs 1000: settles on time, and the next request is answered at once", async (_what, messages) => {
    const { error, ms } = await settle(() => model.generate(messages, { maxNewTokens: 5, timeoutMs: 1000 }));
    // Refused as too long for the context before tokenizing, or timed out: either way within the call's time.
    expect(error?.code, String(error)).toMatch(/^(CONTEXT_OVERFLOW|TIMED_OUT)$/);
    expect(error).toBeInstanceOf(error?.code === "TIMED_OUT" ? TimeoutError : GenerationError);
    expect(ms).toBeLessThan(2000);
    await servesWithin(4000);
  });

  it("an abort while a 15 MB prompt is being prepared: rejects at once, and the next request is answered at once", async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 200);
    const { error, ms } = await settle(() => model.generate([user(huge)], { maxNewTokens: 5, signal: controller.signal }));
    expect(error?.code).toMatch(/^(ABORTED|CONTEXT_OVERFLOW)$/);
    expect(ms).toBeLessThan(1500);
    await servesWithin(4000);
  });
});

describe("input too large for one request is refused before it reaches the wire", () => {
  const cases: [what: string, messages: Messages, field: string][] = [
    ["a 17 MiB text part", [user("x".repeat(17 * 2 ** 20))], "messages[0].content[0].text"],
    [
      "17 MiB spread over parts, the largest named",
      [user(text("a".repeat(6 * 2 ** 20)), text("b".repeat(2 ** 20))), user("c".repeat(11 * 2 ** 20))],
      "messages[1].content[0].text",
    ],
    ["3 MiB of control characters (six bytes each as JSON)", [user("\u0001".repeat(3 * 2 ** 20))], "messages[0].content[0].text"],
  ];
  it.each(cases)("%s: InvalidInputError naming the field and the 16 MiB limit, at once", async (_what, messages, field) => {
    const { error, ms } = await settle(() => model.generate(messages, { maxNewTokens: 5 }));
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error?.code).toBe("INVALID_MESSAGES");
    expect(error?.message).toContain(`\`${field}\``);
    expect(error?.message).toMatch(/over the 16 MiB one request may be/);
    expect(ms).toBeLessThan(3000);
  });

  it("the model still answers", async () => {
    await servesWithin(4000);
  });
});

describe("a signal that is not an AbortSignal", () => {
  const bad = [{ aborted: false }, "stop", 42, null];
  it.each(bad)("generate, stream and workerInfo refuse %j with InvalidInputError, and the model still serves", async (signal) => {
    for (const call of [
      () => model.generate(question, { maxNewTokens: 3, signal: signal as never }),
      () => model.stream(question, { maxNewTokens: 3, signal: signal as never }).result,
      () => model.workerInfo({ signal: signal as never }),
      () => model.releaseMemory({ signal: signal as never }),
    ]) {
      const { error } = await settle(call);
      expect(error).toBeInstanceOf(InvalidInputError);
      expect(error?.message).toMatch(/`signal` option to be an AbortSignal/);
    }
    await servesWithin(4000);
  });
});

describe("a call's timeoutMs and signal cover the worker's restart it waits for", () => {
  it("after a crash, a call with timeoutMs 800 times out on time; a call queued behind another waiting one too", async () => {
    const before = model.restarts;
    const pid = model.workerPid;
    process.kill(pid, "SIGKILL");
    await reaped(pid);
    const first = settle(() => model.generate(question, { maxNewTokens: 5, timeoutMs: 800 }));
    const patient = model.generate(question, { maxNewTokens: 12 });
    const queued = settle(() => model.generate(question, { maxNewTokens: 5, timeoutMs: 800 }));
    const controller = new AbortController();
    const aborted = settle(() => model.generate(question, { maxNewTokens: 5, signal: controller.signal }));
    setTimeout(() => controller.abort(), 300);
    for (const [outcome, errorClass, within] of [
      [await first, TimeoutError, 1600],
      [await queued, TimeoutError, 1600],
      [await aborted, AbortError, 1000],
    ] as const) {
      expect(outcome.error).toBeInstanceOf(errorClass);
      expect(outcome.ms).toBeLessThan(within);
    }
    expect((await first).error?.message).toMatch(/timed out after 800 ms while the worker restarted/);
    expect((await patient).text.toLowerCase()).toContain("blue");
    expect(model.restarts).toBe(before + 1);
    await servesWithin(4000);
  });
});

describe("any failure on the worker's side reaches the caller", () => {
  it("a load of a path with a lone surrogate is answered with a typed error, and the worker serves on", async () => {
    const worker = await WorkerProcess.start(workerCommand({ python: testPython(), source: "option" }), { startupTimeoutMs: 60_000 });
    try {
      const params = { ...loadParamsOf(), model: "/nonexistent/\ud800" };
      const { error, ms } = await settle(() => worker.request("load", params, { timeoutMs: 20_000 }));
      // The SDK's checks refuse such a path first; the worker itself refuses it (INVALID_OPTIONS) or fails to find
      // it (MODEL_NOT_FOUND): either way its answer, which may quote the path, is encoded and arrives.
      expect(error?.code).toMatch(/^(MODEL_NOT_FOUND|INVALID_OPTIONS)$/);
      expect(error?.message).toMatch(/nonexistent/);
      expect(ms).toBeLessThan(10_000);
      await expect(worker.request("ping", {}, { timeoutMs: 5000 })).resolves.toEqual({ pong: true });
    } finally {
      await worker.close();
    }
    expect(await stillRunning([worker.pid])).toEqual([]);
  });

  it("Idefics2.load of such a path settles with a typed error, never hangs", async () => {
    const { error, ms } = await settle(() => Idefics2.load({ python: testPython(), model: "/nonexistent/\ud800", loadTimeoutMs: 60_000 }));
    expect(error?.code).toMatch(/^(MODEL_NOT_FOUND|INVALID_OPTIONS)$/);
    expect(ms).toBeLessThan(30_000);
  });
});

describe("the caller's callbacks that throw", () => {
  it("were called (stderr lines and progress events) and took nothing down", () => {
    expect(progressEvents).toContain("model");
    expect(stderrLines.length).toBeGreaterThan(0);
  });
});

describe("close()", () => {
  it("settles, twice, and ends the worker", async () => {
    const pid = model.workerPid;
    const started = performance.now();
    await model.close();
    await model.close();
    expect(performance.now() - started).toBeLessThan(8000);
    expect(await stillRunning([pid])).toEqual([]);
  });
});

// Until Node has reaped the killed worker (and so the SDK has seen it exit): process.kill(pid, 0) fails only then.
async function reaped(pid: number): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch {
      break;
    }
    if (Date.now() > deadline) throw new Error(`worker ${pid} was not reaped`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await new Promise((resolve) => setTimeout(resolve, 100));
}

// The load params the SDK sends for the embedded model.
function loadParamsOf(): LoadParams {
  const resolved = LoadOptions.parse({});
  return {
    model: resolved.model,
    revision: null,
    quantization: { mode: "none", quantType: null, doubleQuant: null, computeDtype: null, skipModules: null, int8Threshold: null },
    deviceMap: resolved.deviceMap,
    dtype: resolved.dtype,
    attnImplementation: null,
    doImageSplitting: null,
    longestEdge: null,
    trustRemoteCode: false,
    localFilesOnly: false,
    decoder: resolved.decoder,
    maxBatchSize: resolved.maxBatchSize,
    maxMemory: null,
    deterministic: false,
  };
}

import { join } from "node:path";
import { execa } from "execa";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { QueueFullError, WorkerCrashedError } from "../../src/errors.js";
import { image, user } from "../../src/messages.js";
import { Idefics2 } from "../../src/model.js";
import { demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { repoRoot } from "../helpers/reference.js";
import { alive } from "../helpers/processes.js";

const question = [user(image(demoSecond), "What colour is the shape?")];
const longAnswer = { maxNewTokens: 300, minNewTokens: 300 };

async function waitUntilDead(pid: number, ms = 10_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!alive(pid)) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return !alive(pid);
}

describe("a worker that dies", () => {
  let model: Idefics2;
  beforeAll(async () => {
    model = await Idefics2.load({ python: testPython() });
  });
  afterAll(async () => {
    await model?.close();
  });

  it("rejects every pending call at once with WorkerCrashedError, then the next call starts a new worker and reloads", async () => {
    const first = model.workerPid;
    const stream = model.stream(question, longAnswer);
    const queued = model.generate(question, { maxNewTokens: 5 });
    const pending = [stream.result, queued].map((promise) =>
      promise.then(
        (r) => `resolved ${JSON.stringify(r).slice(0, 300)}`,
        (error: unknown) => error,
      ),
    );
    // Read on after the kill (leaving the loop would cancel the stream): the crash ends the iteration.
    let killed = false;
    const iteration = (async () => {
      for await (const _ of stream) {
        if (!killed) process.kill(first, "SIGKILL");
        killed = true;
      }
    })().then(
      () => "finished",
      (error: unknown) => error,
    );
    const started = Date.now();
    const outcomes = await Promise.all([...pending, iteration]);
    expect(Date.now() - started).toBeLessThan(2000);
    for (const outcome of outcomes) {
      expect(outcome).toBeInstanceOf(WorkerCrashedError);
      expect((outcome as WorkerCrashedError).signal).toBe("SIGKILL");
    }
    const after = await model.generate(question, { maxNewTokens: 20 });
    expect(after.text.toLowerCase()).toContain("blue");
    expect(model.workerPid).not.toBe(first);
    expect(model.restarts).toBe(1);
    expect(alive(first)).toBe(false);
  });

  it("is replaced once however many calls arrive after the crash", async () => {
    const before = model.restarts;
    process.kill(model.workerPid, "SIGKILL");
    await waitUntilDead(model.workerPid);
    const results = await Promise.all(Array.from({ length: 4 }, () => model.generate(question, { maxNewTokens: 20 })));
    for (const result of results) expect(result.text.toLowerCase()).toContain("blue");
    expect(model.restarts).toBe(before + 1);
  });
});

describe("restartOnCrash: false", () => {
  it("keeps rejecting with the crash error instead of starting a new worker", async () => {
    const model = await Idefics2.load({ python: testPython(), restartOnCrash: false });
    try {
      const pid = model.workerPid;
      process.kill(pid, "SIGKILL");
      await waitUntilDead(pid);
      await expect(model.generate(question, { maxNewTokens: 5 })).rejects.toBeInstanceOf(WorkerCrashedError);
      await expect(model.generate(question, { maxNewTokens: 5 })).rejects.toBeInstanceOf(WorkerCrashedError);
      expect(model.restarts).toBe(0);
    } finally {
      await model.close();
    }
  });
});

describe("maxQueue", () => {
  it("rejects a generation beyond the limit at once with QueueFullError, and serves the others", async () => {
    const model = await Idefics2.load({ python: testPython(), maxQueue: 2 });
    try {
      const accepted = [model.generate(question, { maxNewTokens: 10 }), model.generate(question, { maxNewTokens: 10 })];
      const started = Date.now();
      await expect(model.generate(question, { maxNewTokens: 10 })).rejects.toBeInstanceOf(QueueFullError);
      expect(Date.now() - started).toBeLessThan(100);
      for (const result of await Promise.all(accepted)) expect(result.text.toLowerCase()).toContain("blue");
      await expect(model.generate(question, { maxNewTokens: 10 })).resolves.toMatchObject({ finishReason: "stop" });
    } finally {
      await model.close();
    }
  });
});

describe("call order", () => {
  it("serves calls in the order they were made, even when an earlier one's image takes longer to decode", async () => {
    const model = await Idefics2.load({ python: testPython() });
    try {
      const big = await sharp({ create: { width: 4000, height: 3000, channels: 3, background: { r: 30, g: 60, b: 220 } } })
        .png()
        .toBuffer();
      const finished: string[] = [];
      const slow = model.generate([user(image(big), "What colour is the shape?")], { maxNewTokens: 5 }).then(() => finished.push("first"));
      const fast = model.stream([user("Hello!")], { maxNewTokens: 5 }).result.then(() => finished.push("second"));
      await Promise.all([slow, fast]);
      expect(finished).toEqual(["first", "second"]);
    } finally {
      await model.close();
    }
  });
});

describe("a program that forgets close()", () => {
  it("still exits on its own, and its worker goes with it", async () => {
    const script = `
      import { Idefics2, user, image } from ${JSON.stringify(join(repoRoot, "dist", "index.js"))};
      const model = await Idefics2.load({ python: ${JSON.stringify(testPython())} });
      const result = await model.generate([user(image(${JSON.stringify(demoSecond)}), "What colour is the shape?")], { maxNewTokens: 20 });
      console.log(JSON.stringify({ pid: model.workerPid, text: result.text }));
    `;
    const started = Date.now();
    const child = await execa(process.execPath, ["--input-type=module", "-e", script], { timeout: 120_000 });
    const { pid, text } = JSON.parse(child.stdout) as { pid: number; text: string };
    expect(text.toLowerCase()).toContain("blue");
    expect(child.exitCode).toBe(0);
    expect(Date.now() - started).toBeLessThan(90_000);
    expect(await waitUntilDead(pid)).toBe(true);
  });
});

import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InvalidInputError, ModelLoadError, WorkerCrashedError } from "../../src/errors.js";
import { image, user } from "../../src/messages.js";
import { Idefics2 } from "../../src/model.js";
import { demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { alive } from "../helpers/processes.js";

// Several workers behind one model (`devices`), on the CPU: two workers of the embedded model, each a real worker.

const question = [user(image(demoSecond), "What colour is the shape?")];
const greeting = [user("Hello!")];
const longAnswer = { maxNewTokens: 150, minNewTokens: 150 };

async function until(condition: () => boolean, what: string, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** The process ids of this process's children. */
async function children(): Promise<number[]> {
  const { stdout } = await execa("ps", ["-o", "pid=", "--ppid", String(process.pid)], { reject: false });
  return stdout
    .split("\n")
    .map((line) => Number(line.trim()))
    .filter((pid) => pid > 0);
}

describe("devices: two workers on the CPU", () => {
  let pair: Idefics2;
  let single: Idefics2;
  beforeAll(async () => {
    [pair, single] = await Promise.all([
      Idefics2.load({ python: testPython(), devices: ["cpu", "cpu"] }),
      Idefics2.load({ python: testPython() }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([pair?.close(), single?.close()]);
  });

  it("starts one worker per device, and keeps the single-worker fields meaning the first", () => {
    const [first, second] = pair.replicas;
    expect(pair.replicas).toHaveLength(2);
    expect(first).toMatchObject({ index: 0, device: "cpu", state: "ready", inFlight: 0, restarts: 0 });
    expect(second).toMatchObject({ index: 1, device: "cpu", state: "ready", inFlight: 0, restarts: 0 });
    expect(first?.pid).not.toBe(second?.pid);
    expect(pair.workerPid).toBe(first?.pid);
    expect(pair.info).toEqual(first?.info);
    expect(single.replicas).toHaveLength(1);
    expect(single.replicas[0]).toMatchObject({ device: "auto", pid: single.workerPid });
  });

  it("spreads concurrent calls over both workers, with the single worker's greedy tokens", async () => {
    const before = pair.replicas.map((replica) => replica.routed);
    const [expectedPicture, expectedText] = await Promise.all([
      single.generate(question, { maxNewTokens: 20 }),
      single.generate(greeting, { maxNewTokens: 20 }),
    ]);
    const calls = Array.from({ length: 6 }, (_, index) =>
      index % 2 === 0 ? pair.generate(question, { maxNewTokens: 20 }) : pair.stream(greeting, { maxNewTokens: 20 }).result,
    );
    const results = await Promise.all(calls);
    results.forEach((result, index) => {
      expect(result.tokenIds).toEqual((index % 2 === 0 ? expectedPicture : expectedText).tokenIds);
    });
    expect(expectedPicture.text.toLowerCase()).toContain("blue");
    const routed = pair.replicas.map((replica, index) => replica.routed - (before[index] ?? 0));
    // Six calls at once, least loaded first with ties in turn: three each.
    expect(routed).toEqual([3, 3]);
    expect(pair.replicas.map((replica) => replica.inFlight)).toEqual([0, 0]);
  });

  it("workerInfo() and releaseMemory() reach every worker", async () => {
    const info = await pair.workerInfo({ replica: 1 });
    expect(info.model?.device).toBe("cpu");
    await expect(pair.workerInfo({ replica: 2 })).rejects.toBeInstanceOf(InvalidInputError);
    const released = await pair.releaseMemory();
    expect(released.replicas).toHaveLength(2);
    expect(released.freedKvCacheBytes).toBe(released.replicas.reduce((sum, one) => sum + one.freedKvCacheBytes, 0));
  });

  it("fails a killed worker's call with WorkerCrashedError, serves new calls on the other, and brings the worker back", async () => {
    // One long answer on each worker (the second call goes to the less loaded one), then the second worker is killed.
    const long = [pair.generate(question, longAnswer), pair.generate(question, longAnswer)].map((call) =>
      call.then(
        (result) => result,
        (error: unknown) => error,
      ),
    );
    await until(() => pair.replicas.every((replica) => replica.inFlight === 1), "each worker has a call");
    await new Promise((resolve) => setTimeout(resolve, 300));
    const victim = pair.replicas[1]?.pid ?? 0;
    const survivor = pair.replicas[0]?.pid;
    const servedBefore = pair.replicas[0]?.routed ?? 0;
    process.kill(victim, "SIGKILL");

    // The killed worker's call fails at once; the other's answer is still being written.
    const first = await Promise.race(long);
    expect(first).toBeInstanceOf(WorkerCrashedError);
    expect((first as WorkerCrashedError).signal).toBe("SIGKILL");
    expect(pair.replicas[1]?.state).toBe("restarting");

    // While the killed worker is replaced, new calls go to the other one.
    const during = await pair.generate(question, { maxNewTokens: 20 });
    expect(during.text.toLowerCase()).toContain("blue");
    expect(pair.replicas[0]).toMatchObject({ pid: survivor, routed: servedBefore + 1 });
    const outcomes = await Promise.all(long);
    expect(outcomes.filter((outcome) => outcome instanceof WorkerCrashedError)).toHaveLength(1);
    expect(outcomes.filter((outcome) => !(outcome instanceof Error))).toHaveLength(1);

    await until(() => pair.replicas[1]?.state === "ready", "the killed worker is replaced");
    expect(pair.replicas[1]?.restarts).toBe(1);
    expect(pair.restarts).toBe(1);
    expect(pair.replicas[1]?.pid).not.toBe(victim);
    expect(alive(victim)).toBe(false);
    const after = await Promise.all([pair.generate(question, { maxNewTokens: 20 }), pair.generate(question, { maxNewTokens: 20 })]);
    for (const result of after) expect(result.text.toLowerCase()).toContain("blue");
    expect(pair.replicas[1]?.routed).toBeGreaterThan(1);
  });

  it("close() ends every worker", async () => {
    const pids = pair.replicas.map((replica) => replica.pid);
    await pair.close();
    for (const pid of pids) expect(alive(pid)).toBe(false);
  });
});

describe("devices: load", () => {
  it("stops the workers already started when one fails to load, and rejects with its error", async () => {
    const before = new Set(await children());
    // cuda:0 fails on this CPU-only machine (check_load, CUDA_UNAVAILABLE) while the CPU worker loads.
    const loading = Idefics2.load({ python: testPython(), devices: ["cpu", "cuda:0"] });
    await expect(loading).rejects.toMatchObject({ code: "CUDA_UNAVAILABLE" });
    await expect(loading).rejects.toBeInstanceOf(ModelLoadError);
    const left = (await children()).filter((pid) => !before.has(pid) && alive(pid));
    expect(left).toEqual([]);
  });

  it('refuses "all" with CUDA_UNAVAILABLE where torch sees no CUDA device', async () => {
    await expect(Idefics2.load({ python: testPython(), devices: "all" })).rejects.toMatchObject({
      code: "CUDA_UNAVAILABLE",
      message: expect.stringContaining('devices: "all" found no CUDA device'),
    });
  });

  it.each([
    [{ devices: ["cpu"], deviceMap: "cpu" }, /`devices`: cannot be combined with deviceMap "cpu"/],
    [{ devices: ["cpu"], maxMemory: { cpu: "1GiB" } }, /`maxMemory`: cannot be combined with `devices`/],
    [{ deviceMap: "cuda:0", maxMemory: { "0": "1GiB" } }, /`maxMemory`: bounds deviceMap "auto" only/],
    [{ devices: [] }, /`devices`/],
    [{ devices: ["cuda"] }, /`devices\.0`/],
    [{ maxMemory: { "cuda:0": "1GiB" } }, /`maxMemory/],
    [{ maxMemory: { "0": "10gb" } }, /`maxMemory\.0`/],
  ] as const)("refuses %j before starting anything", async (options, message) => {
    const loading = Idefics2.load({ python: testPython(), ...(options as object) });
    await expect(loading).rejects.toBeInstanceOf(InvalidInputError);
    await expect(loading).rejects.toThrow(message);
  });
});

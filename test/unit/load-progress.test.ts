import { describe, expect, it } from "vitest";
import { LoadProgress, LoadStage, SetupProgress, SetupStage } from "../../src/index.js";
import { workerLoadStage } from "../../src/load-progress.js";
import { stampedListener } from "../../src/progress-event.js";

describe("progress events", () => {
  it("parse each kind, and refuse a field of another kind", () => {
    const events = [
      { type: "stage", stage: "worker", message: "Starting the Python worker", elapsedMs: 12 },
      { type: "log", stage: "pip", message: "Collecting torch==2.13.0", elapsedMs: 80 },
      { type: "progress", stage: "pip", message: "Downloading torch", done: 1024, total: 4096, unit: "bytes", elapsedMs: 95 },
      { type: "progress", stage: "model", message: "Loading the weights", done: 40, unit: "percent", elapsedMs: 300 },
    ];
    for (const event of events) expect(LoadProgress.parse(event)).toEqual(event);
    expect(LoadProgress.safeParse({ type: "progress", stage: "pip", message: "m", done: 1, unit: "bits", elapsedMs: 1 }).success).toBe(
      false,
    );
    expect(LoadProgress.safeParse({ type: "stage", stage: "compile", message: "m", elapsedMs: 1 }).success).toBe(false);
  });

  it("cover every setup stage in load()'s stages, so set-up events pass through load() as they are", () => {
    expect(LoadStage.options).toEqual(expect.arrayContaining(SetupStage.options));
    const setup = SetupProgress.parse({ type: "log", stage: "venv", message: "created", elapsedMs: 3 });
    expect(LoadProgress.parse(setup)).toEqual(setup);
  });

  it("type the worker's stages, and count one this SDK does not know as `model`", () => {
    expect(["unload", "processor", "model", "download", "compile"].map(workerLoadStage)).toEqual([
      "unload",
      "processor",
      "model",
      "download",
      "model",
    ]);
  });

  it("stamp each event with the milliseconds since the listener was wrapped", async () => {
    const seen: LoadProgress[] = [];
    const report = stampedListener<LoadProgress>((event) => seen.push(event));
    report?.({ type: "stage", stage: "worker", message: "now" });
    await new Promise((resolve) => setTimeout(resolve, 30));
    report?.({ type: "log", stage: "pip", message: "later" });
    expect(seen.map((event) => [event.type, event.message])).toEqual([
      ["stage", "now"],
      ["log", "later"],
    ]);
    expect(seen[0]?.elapsedMs).toBeLessThan(30);
    expect(seen[1]?.elapsedMs).toBeGreaterThanOrEqual(25);
    expect(stampedListener(undefined)).toBeUndefined();
  });
});

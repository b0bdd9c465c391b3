import { join } from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { LoadProgress } from "../../src/load-progress.js";
import { Idefics2 } from "../../src/model.js";
import { demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { repoRoot } from "../helpers/reference.js";

type Count = Extract<LoadProgress, { type: "progress" }>;

// The tiny model has 92 tensors: transformers' "Loading weights" bar counts them, and the worker sends the counts.
const TENSORS = 92;

describe("load() progress with the real worker on the embedded model", () => {
  it("reports each step in order, then the weights placed as counts, each event stamped with its elapsed time", async () => {
    const events: LoadProgress[] = [];
    const model = await Idefics2.load({ python: testPython(), onProgress: (event) => events.push(event) });
    await model.close();

    for (const event of events) expect(LoadProgress.parse(event)).toEqual(event);
    const stages = events.filter((event) => event.type === "stage").map((event) => event.stage);
    expect(stages).toEqual(["probe", "ready", "worker", "model", "processor", "model"]);
    const elapsed = events.map((event) => event.elapsedMs);
    expect(elapsed).toEqual([...elapsed].sort((a, b) => a - b));
    expect(elapsed.at(-1)).toBeLessThanOrEqual(model.info.loadMs + 1_000);

    const counts = events.filter((event): event is Count => event.type === "progress");
    expect(counts[0]).toMatchObject({ stage: "model", message: expect.stringMatching(/^Loading the weights of .*tiny-idefics2$/) });
    expect(counts.map(({ done, total, unit }) => ({ done, total, unit }))).toEqual(
      counts.map(({ done }) => ({ done, total: TENSORS, unit: "items" })),
    );
    const done = counts.map((event) => event.done);
    expect(done[0]).toBe(0);
    expect(done.at(-1)).toBe(TENSORS);
    expect(done).toEqual([...new Set(done)].sort((a, b) => a - b));
    // The counts come after the worker said it loads the model, and are the last events of the load.
    const lastStage = events.map((event) => event.type).lastIndexOf("stage");
    expect(events.indexOf(counts[0] as Count)).toBeGreaterThan(lastStage);
  });
});

const cli = join(repoRoot, "dist", "cli", "main.js");
const ask = ["generate", "--prompt", "What colour is the shape?", "--image", demoSecond, "--max-new-tokens", "20"];
const ESC = "\u001b";
// A terminal's control sequences (cursor moves, clearing, line wrap), to see what stays on the screen.
const controls = new RegExp(`${ESC}\\[[0-9;?]*[A-Za-z]`, "g");

describe("the CLI's progress display", () => {
  it("writes plain, time-stamped lines on stderr when it is not a terminal, and only the answer on stdout", async () => {
    const run = await execa(process.execPath, [cli, ...ask], { env: { IDEFICS2_PYTHON: testPython() }, reject: false, timeout: 240_000 });
    expect(run.exitCode).toBe(0);
    expect(run.stdout.toLowerCase()).toContain("blue");
    expect(run.stdout.split("\n")).toHaveLength(1);
    expect(run.stdout).not.toMatch(/\[|tokens\/s|Loading/);
    expect(run.stderr).not.toContain(ESC);
    const lines = run.stderr.split("\n");
    for (const line of lines) expect(line).toMatch(/^\[ *\d+(\.\d)? (ms|s)\] [a-z-]+ +\S/);
    const steps = lines.map((line) => /^\[[^\]]+\] ([a-z-]+)/.exec(line)?.[1]);
    expect(steps.slice(0, 6)).toEqual(["probe", "ready", "worker", "model", "processor", "model"]);
    expect(lines).toContainEqual(expect.stringMatching(/ model +Loading the weights of .*tiny-idefics2: 0 of 92 items \(0%\)$/));
    expect(lines).toContainEqual(expect.stringMatching(/ model +Loading the weights of .*tiny-idefics2: 92 of 92 items \(100%\)$/));
    expect(lines.at(-1)).toMatch(/ answer +\d+ tokens? in \d+(\.\d)? (ms|s) · \d+\.\d tokens\/s · first token after \d+/);
  });

  it("draws one live line in a terminal, leaves each finished step with its time, and tokens/s after the answer", async () => {
    const command = [process.execPath, cli, ...ask].map((word) => `'${word}'`).join(" ");
    const run = await execa("script", ["-qfec", command, "/dev/null"], {
      env: { IDEFICS2_PYTHON: testPython() },
      reject: false,
      timeout: 240_000,
    });
    expect(run.exitCode).toBe(0);
    const screen = run.stdout;
    // Redrawn in place (no line wrap while drawing, restored at the end), with a spinner and a bar of the count.
    expect(screen).toContain(`${ESC}[?7l`);
    expect(screen).toContain(`${ESC}[?7h`);
    expect(screen).toMatch(/█{20} 92 of 92 items \(100%\)/);
    // What stays: each finished step with its duration, then the answer, then its speed.
    const kept = screen.split(/\r?\n/).map((line) => (line.split(`${ESC}[2K`).at(-1) as string).replace(controls, ""));
    expect(kept).toContainEqual(expect.stringMatching(/^✔ worker +Starting the Python worker .*\(\d+(\.\d)? (ms|s)\)$/));
    expect(kept).toContainEqual(
      expect.stringMatching(/^✔ model +Loading the model .*tiny-idefics2 · 92 of 92 items \(100%\) \(\d+(\.\d)? (ms|s)\)$/),
    );
    const answer = kept.findIndex((line) => line.toLowerCase().includes("blue"));
    expect(answer).toBeGreaterThan(0);
    expect(kept[answer + 1]).toMatch(/^\d+ tokens? in \d+(\.\d)? (ms|s) · \d+\.\d tokens\/s · first token after /);
  });
});

import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { countText, createProgressDisplay, seconds } from "../../src/cli/progress-display.js";

function sink(isTTY: boolean): Writable & { text: () => string; isTTY: boolean; columns: number } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      chunks.push(String(chunk));
      callback();
    },
  });
  return Object.assign(stream, { isTTY, columns: 100, text: () => chunks.join("") });
}

describe("the progress display", () => {
  it("writes counts as plain lines at most every interval, each step's start, never pip's log lines", () => {
    const stream = sink(false);
    const display = createProgressDisplay({ stream, plainIntervalMs: 2000 });
    display.onProgress({ type: "stage", stage: "pip", message: "Installing requirements.txt", elapsedMs: 0 });
    display.onProgress({ type: "log", stage: "pip", message: "WARNING: Location is ignored", elapsedMs: 1 });
    const total = 43_139_553;
    // 50 steps of 2%, rounded to whole bytes: 20 of them is 39.99...%, shown as 39% (a count is never rounded up).
    for (let step = 0; step <= 50; step += 1) {
      const done = Math.round((total * step) / 50);
      display.onProgress({
        type: "progress",
        stage: "pip",
        message: "Downloading bitsandbytes.whl",
        done,
        total,
        unit: "bytes",
        elapsedMs: 100 + step * 100,
      });
    }
    // The start of a known number of items shows at once, however soon after the last line.
    display.onProgress({
      type: "progress",
      stage: "pip",
      message: "Installing 42 packages",
      done: 0,
      total: 42,
      unit: "items",
      elapsedMs: 5200,
    });
    display.onProgress({
      type: "progress",
      stage: "pip",
      message: "Installed 42 packages",
      done: 42,
      total: 42,
      unit: "items",
      elapsedMs: 5300,
    });
    display.done();
    expect(stream.text().split("\n").filter(Boolean)).toEqual([
      "[    0 ms] pip        Installing requirements.txt",
      "[  100 ms] pip        Downloading bitsandbytes.whl: 0 B of 43.1 MB (0%)",
      "[   2.1 s] pip        Downloading bitsandbytes.whl: 17.3 MB of 43.1 MB (39%)",
      "[   4.1 s] pip        Downloading bitsandbytes.whl: 34.5 MB of 43.1 MB (79%)",
      "[   5.1 s] pip        Downloading bitsandbytes.whl: 43.1 MB of 43.1 MB (100%)",
      "[   5.2 s] pip        Installing 42 packages: 0 of 42 items (0%)",
      "[   5.3 s] pip        Installed 42 packages: 42 of 42 items (100%)",
    ]);
  });

  it("in a terminal, keeps each finished step as a line with its count and duration, and ends its live line", () => {
    const stream = sink(true);
    const display = createProgressDisplay({ stream, answerOnSameTerminal: false });
    display.onProgress({ type: "stage", stage: "worker", message: "Starting the Python worker", elapsedMs: 0 });
    display.onProgress({ type: "stage", stage: "model", message: "Loading the model", elapsedMs: 1500 });
    display.onProgress({
      type: "progress",
      stage: "model",
      message: "Loading the weights",
      done: 40,
      total: 92,
      unit: "items",
      elapsedMs: 1600,
    });
    expect(stream.text()).toContain("\u001b[?7l");
    expect(stream.text()).toMatch(/model {6}█{9}░{11} 40 of 92 items \(43%\) · \d+ ms · Loading the weights/);
    display.onProgress({
      type: "progress",
      stage: "model",
      message: "Loading the weights",
      done: 92,
      total: 92,
      unit: "items",
      elapsedMs: 1700,
    });
    display.done("Loaded");
    display.tokens(1, 300);
    display.tokens(21, 1300);
    expect(stream.text()).toMatch(/answer {5}21 tokens · 20\.0 tokens\/s · first token after 300 ms · 1\.3 s/);
    display.answered();
    const text = stream.text();
    expect(text).toContain("✔ worker     Starting the Python worker (1.5 s)");
    expect(text).toMatch(/✔ model {6}Loading the model · 92 of 92 items \(100%\) \(\d+ ms\)\nLoaded\n/);
    expect(text).toContain("21 tokens · 20.0 tokens/s · first token after 300 ms · 1.3 s\n");
    expect(text.endsWith("\u001b[0J")).toBe(true);
  });

  it("formats counts and times for people", () => {
    expect(countText(262_144, 876_263, "bytes")).toBe("262.1 kB of 876.3 kB (29%)");
    expect(countText(2048, undefined, "bytes")).toBe("2.0 kB");
    expect(countText(3, undefined, "items")).toBe("3 items");
    expect(countText(1, 1, "items")).toBe("1 of 1 item (100%)");
    expect(countText(40, undefined, "percent")).toBe("40%");
    expect([seconds(35), seconds(1234), seconds(123_000)]).toEqual(["35 ms", "1.2 s", "2 min 03 s"]);
  });
});

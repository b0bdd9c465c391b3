import { describe, expect, it } from "vitest";
import { AbortError } from "../../src/errors.js";
import { GenerationStream } from "../../src/generation-stream.js";
import type { GenerateResult } from "../../src/protocol/messages.js";

const result: GenerateResult = {
  text: "Hello world",
  tokenIds: [1, 2],
  finishReason: "stop",
  usage: { promptTokens: 3, imageTokens: 0, completionTokens: 2, totalTokens: 5 },
  timings: { preprocessMs: 1, prefillMs: 1, decodeMs: 1, totalMs: 3, decodeTokensPerSecond: 1 },
};

describe("GenerationStream", () => {
  it("yields deltas in order, then returns the result that `result` also resolves with", async () => {
    const stream = new GenerationStream(async (onDelta) => {
      onDelta({ text: "Hello", tokenIds: [1] });
      await new Promise((resolve) => setTimeout(resolve, 10));
      onDelta({ text: "", tokenIds: [9] });
      onDelta({ text: " world", tokenIds: [2] });
      return result;
    });
    const iterator = stream[Symbol.asyncIterator]();
    const seen: string[] = [];
    for (;;) {
      const step = await iterator.next();
      if (step.done) {
        expect(step.value).toEqual(result);
        break;
      }
      seen.push(step.value);
    }
    expect(seen).toEqual(["Hello", " world"]);
    await expect(stream.result).resolves.toEqual(result);
  });

  it("ends iteration with the generation's error, dropping unread deltas", async () => {
    const stream = new GenerationStream(async (onDelta) => {
      onDelta({ text: "a", tokenIds: [1] });
      throw new AbortError("stop");
    });
    await expect(stream.result).rejects.toBeInstanceOf(AbortError);
    const seen: string[] = [];
    await expect(
      (async () => {
        for await (const delta of stream) seen.push(delta);
      })(),
    ).rejects.toBeInstanceOf(AbortError);
    expect(seen).toEqual([]);
  });

  it("can be iterated only once", async () => {
    const stream = new GenerationStream(async () => result);
    for await (const _ of stream) void _;
    await expect(stream[Symbol.asyncIterator]().next()).rejects.toThrow(TypeError);
  });
});

describe("GenerationStream with a signal", () => {
  it("stops yielding queued deltas as soon as the signal aborts", async () => {
    const controller = new AbortController();
    const stream = new GenerationStream(async (onDelta) => {
      for (const text of ["a", "b", "c", "d"]) onDelta({ text, tokenIds: [1] });
      await new Promise((resolve) => setTimeout(resolve, 50));
      return result;
    }, controller.signal);
    const seen: string[] = [];
    await expect(
      (async () => {
        for await (const delta of stream) {
          seen.push(delta);
          if (seen.length === 2) controller.abort();
        }
      })(),
    ).rejects.toBeInstanceOf(AbortError);
    expect(seen).toEqual(["a", "b"]);
  });
});

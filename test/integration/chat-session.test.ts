import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AbortError, GenerationError, InvalidInputError } from "../../src/errors.js";
import { assistant, image, system, user } from "../../src/messages.js";
import { Idefics2 } from "../../src/model.js";
import type { ChatSession } from "../../src/chat-session.js";
import { demoFirst, demoSecond, squarePicture } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";

// Chat sessions against the real worker on the embedded model: the history a session keeps is the conversation
// generate() would be given by hand, token for token.

let model: Idefics2;

beforeAll(async () => {
  model = await Idefics2.load({ python: testPython() });
});

afterAll(async () => {
  await model?.close();
});

const q1 = "What colour is the shape?";
const q2 = "And this one?";
const q3 = "Which of the two is bigger?";

describe("a chat session", () => {
  it("keeps three turns with pictures: the third answer's token ids equal generate() on the whole conversation", async () => {
    const chat = model.chat({ maxNewTokens: 24 });
    let streamed = "";
    for await (const delta of chat.send([image(demoFirst), q1])) streamed += delta;
    const second = await chat.send([image(demoSecond), q2]);
    const third = await chat.send(q3);

    const answers = chat.messages.filter((message) => message.role === "assistant");
    expect(answers[0]?.content).toEqual([{ type: "text", text: streamed.trim() }]);
    const byHand = [
      user(image(demoFirst), q1),
      assistant(streamed.trim()),
      user(image(demoSecond), q2),
      assistant(second.text.trim()),
      user(q3),
    ];
    expect(chat.messages).toEqual([...byHand, assistant(third.text.trim())]);
    const reference = await model.generate(byHand, { maxNewTokens: 24 });
    expect(third.tokenIds).toEqual(reference.tokenIds);
    expect(third.usage.imageTokens).toBe(reference.usage.imageTokens);
    expect(chat.contextUse).toEqual({
      contextTokens: 4096,
      usedTokens: third.usage.totalTokens,
      leftTokens: 4096 - third.usage.totalTokens,
    });
  });

  it("decodes each picture once: its file may be gone by the next turn", async () => {
    const folder = mkdtempSync(join(tmpdir(), "idefics2-chat-"));
    const path = join(folder, "picture.png");
    copyFileSync(demoFirst, path);
    const chat = model.chat({ maxNewTokens: 8 });
    await chat.send([image(path), q1]);
    rmSync(folder, { recursive: true });
    const next = await chat.send("Say it again.");
    expect(next.usage.imageTokens).toBeGreaterThan(0);
    // The same conversation through generate() must read the file, and cannot.
    await expect(model.generate(chat.messages.slice(0, -1).concat(user("Say it again.")))).rejects.toMatchObject({
      code: "IMAGE_UNREADABLE",
    });
  });

  it("starts with a system turn, which reset() keeps while forgetting the rest", async () => {
    const chat = model.chat({ system: "Answer in one word.", maxNewTokens: 6 });
    const answer = await chat.send([image(demoSecond), q1]);
    expect(chat.messages.map((message) => message.role)).toEqual(["system", "user", "assistant"]);
    const reference = await model.generate([system("Answer in one word."), user(image(demoSecond), q1)], { maxNewTokens: 6 });
    expect(answer.tokenIds).toEqual(reference.tokenIds);
    chat.reset();
    expect(chat.messages).toEqual([system("Answer in one word.")]);
    expect(chat.contextUse).toBeUndefined();
  });

  it("saves as JSON, pictures embedded, and goes on from the restored history with the same tokens", async () => {
    const red = await squarePicture([200, 30, 30]);
    const chat = model.chat({ maxNewTokens: 12 });
    await chat.send([image(red), q1]);
    const saved = JSON.stringify(await chat.exportHistory());
    expect(saved).toContain('"source":"data:image/png;base64,');
    expect(saved).not.toContain(red);

    const restored = model.chat({ history: JSON.parse(saved), maxNewTokens: 12 });
    expect(restored.messages.map((message) => message.role)).toEqual(["user", "assistant"]);
    const [goneOn, original] = [await restored.send(q3), await chat.send(q3)];
    expect(goneOn.tokenIds).toEqual(original.tokenIds);
  });

  it("adds nothing when a turn is aborted, or its stream left early, and answers the next turn at once", async () => {
    const chat = model.chat({ maxNewTokens: 2000, minNewTokens: 2000 });
    await chat.send([image(demoSecond), q1], { maxNewTokens: 6, minNewTokens: 0 });
    const before = chat.messages;

    const controller = new AbortController();
    const aborted = chat.send("Tell me a long story.", { signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await expect(aborted).rejects.toBeInstanceOf(AbortError);
    expect(chat.messages).toEqual(before);

    const left = chat.send("Tell me another long story.");
    for await (const _delta of left) break;
    await expect(left.result).rejects.toBeInstanceOf(AbortError);
    expect(chat.messages).toEqual(before);

    const started = performance.now();
    const next = await chat.send(q3, { maxNewTokens: 4, minNewTokens: 0 });
    // 2000 forced tokens take seconds here; a cancelled turn frees the worker within a token or so.
    expect(performance.now() - started - next.timings.totalMs).toBeLessThan(500);
  });

  it("refuses a turn whose answer could pass the context, saying what it needs and what is left", async () => {
    const chat = model.chat();
    const error = await chat.send([image(demoSecond), q1], { maxNewTokens: 4090 }).then(
      () => undefined,
      (failure: unknown) => failure,
    );
    expect(error).toBeInstanceOf(GenerationError);
    expect(error).toMatchObject({
      code: "CONTEXT_OVERFLOW",
      message: expect.stringMatching(
        /^This turn needs (\d+) tokens \((\d+) of conversation and up to 4090 new\) but the model's context is 4096 tokens: (\d+) are left for the answer$/,
      ),
    });
    const [, needs, prompt, left] = (error as Error).message.match(/needs (\d+) .*\((\d+) of.* (\d+) are left/) ?? [];
    expect(Number(needs)).toBe(Number(prompt) + 4090);
    expect(Number(left)).toBe(4096 - Number(prompt));
    expect((error as GenerationError).fix).toContain(`at most ${left}`);
    expect(chat.messages).toEqual([]);
    // The same conversation through generate() is not a turn: only its prompt must fit.
    await expect(model.generate([user(image(demoSecond), q1)], { maxNewTokens: 4 })).resolves.toBeDefined();
  });

  it("refuses a second turn while the first is answered, a picture without a source, and bad options", async () => {
    const chat: ChatSession = model.chat({ maxNewTokens: 8 });
    const first = chat.send([image(demoSecond), q1]);
    await expect(chat.send("Too soon")).rejects.toMatchObject({ code: "INVALID_MESSAGES", message: /still being answered/ });
    await first;
    await expect(chat.send([image(), "Which?"])).rejects.toMatchObject({ code: "INVALID_MESSAGES", message: /has no source/ });
    await expect(chat.send("Hi", null as never)).rejects.toMatchObject({
      code: "INVALID_OPTIONS",
      message: /must be an object \(got null\)/,
    });
    expect(() => model.chat({ maxNewTokens: -1 })).toThrow(InvalidInputError);
    expect(() => model.chat({ system: "a", history: [] })).toThrow(/either `system` or `history`/);
    expect(() => model.chat({ history: [{ role: "user", content: [{ type: "image" }] }] })).toThrow(/has no source/);
  });
});

describe("a stream left early", () => {
  it("cancels its generation: the next call starts within a token's time, not after the unwanted tokens", async () => {
    const messages = [user(image(demoSecond), "Tell me a long story.")];
    const full = await model.generate(messages, { maxNewTokens: 400, minNewTokens: 400 });
    const perToken = full.timings.decodeMs / full.tokenIds.length;
    const question = [user(image(demoSecond), q1)];
    // What a call costs beyond the worker's own time when nothing is ahead of it: pictures, frames, replies.
    const idleStart = performance.now();
    const idle = await model.generate(question, { maxNewTokens: 4 });
    const overhead = performance.now() - idleStart - idle.timings.totalMs;

    const stream = model.stream(messages, { maxNewTokens: 4000, minNewTokens: 4000 });
    let deltas = 0;
    for await (const _delta of stream) {
      if (++deltas === 3) break;
    }
    const left = performance.now();
    const next = await model.generate(question, { maxNewTokens: 4 });
    const waited = performance.now() - left - next.timings.totalMs - overhead;
    console.log(
      `stream left after 3 deltas: the next call waited ${waited.toFixed(1)} ms beyond an idle call's ${overhead.toFixed(1)} ms overhead; a token takes ${perToken.toFixed(2)} ms`,
    );
    // The 4000 tokens would take seconds; a cancel lands before the next token, and the rest is scheduling noise.
    expect(waited).toBeLessThan(100);
    await expect(stream.result).rejects.toMatchObject({ code: "ABORTED", cause: { name: "StreamLeftError" } });
  });

  it("a stream read to its end is not cancelled, and awaiting it gives its result", async () => {
    const stream = model.stream([user(image(demoSecond), q1)], { maxNewTokens: 8 });
    let text = "";
    for await (const delta of stream) text += delta;
    const result = await stream;
    expect(result.text).toBe(text);
    expect(await model.stream([user(image(demoSecond), q1)], { maxNewTokens: 8 })).toEqual({ ...result, timings: expect.anything() });
  });
});

import { readFileSync } from "node:fs";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { AbortError, GenerationError, ImageError, InvalidInputError, StructuredOutputError } from "../../src/errors.js";
import { image, user } from "../../src/messages.js";
import { Idefics2 } from "../../src/model.js";
import { connect } from "../../src/remote/connect.js";
import type { RemoteIdefics2 } from "../../src/remote/remote-model.js";
import { createServer, type Idefics2Server } from "../../src/server/index.js";
import { demoFirst, demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { sdkBlog } from "./server-helpers.js";

// connect(): the SDK's own API against `idefics2 serve` (in this process, one server for the file), compared with the
// local model it serves.

const KEY = "connect-test-key";
let model: Idefics2;
let server: Idefics2Server;
let remote: RemoteIdefics2;

beforeAll(async () => {
  model = await Idefics2.load({ python: testPython() });
  server = await createServer(model, { port: 0, apiKey: KEY });
  remote = await connect({ baseURL: server.baseURL, apiKey: KEY });
});

afterAll(async () => {
  await remote?.close();
  await server?.close();
  await model?.close();
});

const q = "What colour is the shape?";

describe("connect()", () => {
  it("finds the server's model and its context", () => {
    expect(remote.info).toEqual({ model: "tiny-idefics2", baseURL: server.baseURL, maxContext: 4096 });
  });

  it("generates what the local model generates: text, token ids, finish reason, usage", async () => {
    const [here, there] = [await model.generate(sdkBlog, { maxNewTokens: 40 }), await remote.generate(sdkBlog, { maxNewTokens: 40 })];
    expect(there.tokenIds).toEqual(here.tokenIds);
    expect(there.text).toBe(here.text);
    expect(there.finishReason).toBe(here.finishReason);
    expect(there.usage).toEqual(here.usage);
    expect(there.timings.totalMs).toBeGreaterThan(0);
  });

  it("sends pictures given as bytes, a sharp instance or beside the messages, with the same tokens", async () => {
    const here = await model.generate([user(image(demoSecond), q)], { maxNewTokens: 12 });
    for (const source of [readFileSync(demoSecond), sharp(demoSecond), new URL(`file://${demoSecond}`)]) {
      expect((await remote.generate([user(image(source), q)], { maxNewTokens: 12 })).tokenIds).toEqual(here.tokenIds);
    }
    expect((await remote.generate([user(image(), q)], { maxNewTokens: 12, images: [demoSecond] })).tokenIds).toEqual(here.tokenIds);
  });

  it("streams deltas that add up to the result, the stop string's end included as locally", async () => {
    const here = await model.generate([user(image(demoSecond), q)], { maxNewTokens: 20, stopStrings: ["lu"] });
    const stream = remote.stream([user(image(demoSecond), q)], { maxNewTokens: 20, stopStrings: ["lu"] });
    const deltas: string[] = [];
    for await (const delta of stream) deltas.push(delta);
    const there = await stream;
    expect(deltas.length).toBeGreaterThan(1);
    expect(deltas.join("")).toBe(there.text);
    expect(there).toMatchObject({ text: here.text, tokenIds: here.tokenIds, finishReason: "stop_string" });
  });

  it("aborts: the call rejects with AbortError and the server stops generating before its next token", async () => {
    const long = [user("Tell me a very long story.")];
    const controller = new AbortController();
    const stream = remote.stream(long, { maxNewTokens: 4000, minNewTokens: 4000, signal: controller.signal });
    let pieces = 0;
    await expect(
      (async () => {
        for await (const _ of stream) if (++pieces === 3) controller.abort();
      })(),
    ).rejects.toBeInstanceOf(AbortError);
    await expect(stream.result).rejects.toBeInstanceOf(AbortError);
    // Leaving the loop early cancels too.
    const left = remote.stream(long, { maxNewTokens: 4000, minNewTokens: 4000 });
    for await (const _ of left) break;
    await expect(left.result).rejects.toBeInstanceOf(AbortError);
    const started = performance.now();
    await remote.generate([user("Hi")], { maxNewTokens: 4 });
    expect(performance.now() - started).toBeLessThan(3000);
    await expect(remote.generate(long, { maxNewTokens: 4000, minNewTokens: 4000, timeoutMs: 500 })).rejects.toMatchObject({
      code: "TIMED_OUT",
    });
  });

  it("keeps a chat session of two turns, token for token as a local session", async () => {
    const here = model.chat({ maxNewTokens: 24 });
    const there = remote.chat({ maxNewTokens: 24 });
    const localFirst = await here.send([image(demoFirst), "What do we see?"]);
    let streamed = "";
    for await (const delta of there.send([image(demoFirst), "What do we see?"])) streamed += delta;
    expect(streamed).toBe(localFirst.text);
    const [localSecond, remoteSecond] = [
      await here.send([image(demoSecond), "And here?"]),
      await there.send([image(demoSecond), "And here?"]),
    ];
    expect(remoteSecond.tokenIds).toEqual(localSecond.tokenIds);
    expect(there.messages).toEqual(here.messages);
    expect(there.contextUse).toEqual(here.contextUse);
    expect(await there.exportHistory()).toEqual(await here.exportHistory());
  });

  it("refuses a session's turn whose answer could pass the context before sending it, as the local worker does", async () => {
    const there = remote.chat({ maxNewTokens: 8 });
    await there.send([image(demoFirst), "What do we see?"]);
    const before = there.messages;
    const use = there.contextUse;
    if (use === undefined) throw new Error("the server gave no context length");
    const error = await there.send("And then?", { maxNewTokens: use.leftTokens }).then(
      () => undefined,
      (failure: unknown) => failure,
    );
    expect(error).toBeInstanceOf(GenerationError);
    expect(error).toMatchObject({
      code: "CONTEXT_OVERFLOW",
      message: `This turn needs more than ${use.contextTokens} tokens (over ${use.usedTokens} of conversation and up to ${use.leftTokens} new) but the model's context is ${use.contextTokens} tokens`,
    });
    expect((error as GenerationError).fix).toContain(`below ${use.leftTokens}`);
    expect(there.messages).toEqual(before);
    await expect(there.send("And then?", { maxNewTokens: 4 })).resolves.toMatchObject({ finishReason: expect.any(String) });
  });

  it("raises the SDK's typed errors for the server's refusals", async () => {
    await expect(remote.generate([user(image(Buffer.from("not a picture")), q)])).rejects.toBeInstanceOf(ImageError);
    await expect(remote.generate([user(q)], { numBeams: 2 })).rejects.toBeInstanceOf(InvalidInputError);
    await expect(connect({ baseURL: server.baseURL, apiKey: "wrong" })).rejects.toMatchObject({ code: "INVALID_OPTIONS", message: /401/ });
    await expect(connect({ baseURL: "http://127.0.0.1:9/v1", connectTimeoutMs: 5000 })).rejects.toMatchObject({
      code: "GENERATION_FAILED",
    });
    await expect(connect({ baseURL: "ftp://example.org" })).rejects.toBeInstanceOf(InvalidInputError);
  });
});

describe("structured output through connect()", () => {
  const Shape = z.object({ colour: z.enum(["red", "green", "blue", "yellow"]), size: z.enum(["small", "big"]) });
  const ask = [user(image(demoSecond), "Describe the shape as JSON.")];

  it("gives the local model's object and token ids for a zod schema and a JSON Schema, generated or streamed", async () => {
    for (const schema of [Shape, z.toJSONSchema(Shape)]) {
      const here = await model.generate(ask, { schema, maxNewTokens: 60 });
      const there = await remote.generate(ask, { schema, maxNewTokens: 60 });
      expect(there.object).toEqual(here.object);
      expect(there).toMatchObject({ text: here.text, tokenIds: here.tokenIds, finishReason: "stop" });
    }
    const stream = remote.stream(ask, { schema: Shape, maxNewTokens: 60 });
    let streamed = "";
    for await (const delta of stream) streamed += delta;
    const result = await stream;
    // Typed by the zod schema, as locally.
    const colour: "red" | "green" | "blue" | "yellow" = result.object.colour;
    expect(Shape.parse(JSON.parse(streamed))).toEqual(result.object);
    expect(colour).toBe(result.object.colour);
  });

  it("answers a chat turn with a schema as a local session does", async () => {
    const here = await model.chat({ maxNewTokens: 60 }).send([image(demoFirst), "Describe it"], { schema: Shape });
    const there = await remote.chat({ maxNewTokens: 60 }).send([image(demoFirst), "Describe it"], { schema: Shape });
    expect([there.object, there.tokenIds]).toEqual([here.object, here.tokenIds]);
  });

  it("rejects a cut-off answer with INCOMPLETE_STRUCTURE and a schema the engine cannot compile with INVALID_OPTIONS, as locally", async () => {
    const cut = await remote.generate(ask, { schema: Shape, maxNewTokens: 4 }).catch((error: unknown) => error);
    const localCut = await model.generate(ask, { schema: Shape, maxNewTokens: 4 }).catch((error: unknown) => error);
    expect(cut).toBeInstanceOf(StructuredOutputError);
    expect(cut).toMatchObject({ code: "INCOMPLETE_STRUCTURE", text: (localCut as StructuredOutputError).text });
    expect((cut as StructuredOutputError).result).toMatchObject({ finishReason: "incomplete_structure" });
    const bad = await remote.generate(ask, { schema: { type: "object", not: { required: ["a"] } } }).catch((error: unknown) => error);
    expect(bad).toBeInstanceOf(InvalidInputError);
    expect(bad).toMatchObject({ code: "INVALID_OPTIONS", message: expect.stringContaining('Unimplemented keys: ["not"]') });
  });

  it("refuses choices and regex (OpenAI's response_format has no place for them) and minNewTokens beside a schema", async () => {
    for (const options of [{ choices: ["red", "blue"] }, { regex: "[a-z]+" }] as const) {
      await expect(remote.generate(ask, options)).rejects.toMatchObject({
        name: "InvalidInputError",
        code: "INVALID_OPTIONS",
        message: expect.stringMatching(/has no OpenAI parameter/),
      });
    }
    await expect(remote.generate(ask, { schema: Shape, minNewTokens: 3 })).rejects.toMatchObject({
      code: "INVALID_OPTIONS",
      message: expect.stringMatching(/`minNewTokens` cannot be combined with `schema`/),
    });
  });
});

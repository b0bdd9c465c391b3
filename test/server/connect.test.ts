import { readFileSync } from "node:fs";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AbortError, ImageError, InvalidInputError } from "../../src/errors.js";
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

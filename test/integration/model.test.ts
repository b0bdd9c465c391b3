import { writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AbortError, ClosedError, ImageError, InvalidInputError } from "../../src/errors.js";
import { assistant, image, user } from "../../src/messages.js";
import { Idefics2 } from "../../src/model.js";
import { demoFirst, demoSecond, squarePicture } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";

const blog = [
  user(image(demoFirst), "What do we see in this image?"),
  assistant("In this image, we can see a red circle."),
  user(image(demoSecond), "And how about this image? Which colour is that?"),
];

describe("Idefics2 on the embedded model", () => {
  let model: Idefics2;
  beforeAll(async () => {
    model = await Idefics2.load({ python: testPython() });
  });
  afterAll(async () => {
    await model?.close();
  });

  it("reports what it loaded", () => {
    expect(model.info).toMatchObject({ quantization: "none", device: "cpu", doImageSplitting: true });
    expect(model.info.loadMs).toBeGreaterThan(0);
  });

  it("answers the blog-shaped conversation about the second picture, and stops at <end_of_utterance>", async () => {
    const result = await model.generate(blog, { maxNewTokens: 40 });
    expect(result.text.toLowerCase()).toContain("blue");
    expect(result.finishReason).toBe("stop");
    expect(result.usage.imageTokens).toBeGreaterThan(0);
    expect(result.usage.completionTokens).toBe(result.tokenIds.length);
    expect(result.usage.totalTokens).toBe(result.usage.promptTokens + result.usage.completionTokens);
    expect(result.timings.totalMs).toBeGreaterThan(0);
  });

  it("names the colour of fresh pictures it never saw", async () => {
    const colours = { red: [220, 30, 30], green: [30, 170, 50], blue: [30, 60, 220], yellow: [240, 220, 30] } as const;
    for (const [name, rgb] of Object.entries(colours)) {
      const picture = await squarePicture([...rgb], `${name}.png`);
      const result = await model.generate([user(image(picture), "What colour is the shape?")], { maxNewTokens: 20 });
      expect(result.text.toLowerCase(), `for a ${name} square`).toContain(name);
    }
  });

  it("streams deltas that add up to the result's text, and the result equals generate()'s", async () => {
    const stream = model.stream(blog, { maxNewTokens: 40 });
    const deltas: string[] = [];
    for await (const delta of stream) deltas.push(delta);
    const streamed = await stream.result;
    expect(deltas.length).toBeGreaterThan(1);
    expect(deltas.join("")).toBe(streamed.text);
    const whole = await model.generate(blog, { maxNewTokens: 40 });
    expect(streamed.tokenIds).toEqual(whole.tokenIds);
  });

  it("ends an aborted stream with AbortError before the next token, and the next call works", async () => {
    const controller = new AbortController();
    const stream = model.stream([user("Tell me a long story about New York.")], {
      maxNewTokens: 400,
      minNewTokens: 400,
      signal: controller.signal,
    });
    const seen: string[] = [];
    const ended = (async () => {
      for await (const delta of stream) {
        seen.push(delta);
        if (seen.length === 3) controller.abort();
      }
    })();
    await expect(ended).rejects.toBeInstanceOf(AbortError);
    expect(seen).toHaveLength(3);
    const after = await model.generate(blog, { maxNewTokens: 40 });
    expect(after.text.toLowerCase()).toContain("blue");
  });

  it("honours stop strings, sampling with a seed, and max new tokens", async () => {
    const stopped = await model.generate([user("Hello! What can you tell me about New York?")], { maxNewTokens: 3, minNewTokens: 3 });
    expect(stopped.finishReason).toBe("length");
    expect(stopped.tokenIds).toHaveLength(3);
    const options = { maxNewTokens: 12, doSample: true, temperature: 1.5, topK: 50, seed: 1234 };
    const first = await model.generate(blog, options);
    const second = await model.generate(blog, options);
    expect(second.tokenIds).toEqual(first.tokenIds);
  });

  it("refuses more image parts than images, before the worker sees anything", async () => {
    const started = Date.now();
    const error = await model.generate([user(image(), image(), "Two?")], { images: [demoFirst] }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as InvalidInputError).message).toBe("The messages have 2 image parts but 1 image was given");
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it("refuses a missing file and a corrupt image with ImageError, and keeps serving", async () => {
    await expect(model.generate([user(image("/no/such/picture.png"), "What?")])).rejects.toMatchObject({ code: "IMAGE_UNREADABLE" });
    const corrupt = join(tmpdir(), "idefics2-corrupt.jpg");
    await writeFile(corrupt, Buffer.from("this is not a jpeg at all"));
    await expect(model.generate([user(image(corrupt), "What?")])).rejects.toBeInstanceOf(ImageError);
    await expect(model.generate(blog, { maxNewTokens: 5 })).resolves.toMatchObject({ tokenIds: expect.any(Array) });
  });

  it("refuses an unknown generation option naming it", async () => {
    await expect(model.generate(blog, { maxTokens: 5 } as never)).rejects.toThrow(/maxTokens/);
  });
});

describe("Idefics2 lifecycle", () => {
  it("loads 8-bit and 4-bit on the CPU, and rejects calls after close()", async () => {
    for (const quantization of ["8bit", "4bit"] as const) {
      const model = await Idefics2.load({ quantization, python: testPython() });
      expect(model.info.quantization).toBe(quantization);
      const result = await model.generate(blog, { maxNewTokens: 30 });
      expect(result.text.toLowerCase()).toContain("blue");
      await model.close();
      await model.close();
      await expect(model.generate(blog)).rejects.toBeInstanceOf(ClosedError);
    }
  });

  it("with the fast decoder, answers concurrent calls in one batch with the tokens each gets alone", async () => {
    await using reference = await Idefics2.load({ python: testPython(), decoder: "reference" });
    await using fast = await Idefics2.load({ python: testPython(), decoder: "fast", maxBatchSize: 4 });
    expect(reference.info.decoder).toBe("reference");
    expect(fast.info).toMatchObject({ decoder: "fast", maxBatchSize: 4 });
    const conversations = [
      blog,
      [user(image(demoSecond), "What colour is this?")],
      [user("Tell me about squares.")],
      [user(image(demoFirst), "And this one?")],
      blog,
    ];
    const expected = [];
    for (const conversation of conversations) expected.push(await reference.generate(conversation, { maxNewTokens: 24 }));
    const together = await Promise.all(conversations.map((conversation) => fast.generate(conversation, { maxNewTokens: 24 })));
    expect(together.map((r) => r.tokenIds)).toEqual(expected.map((r) => r.tokenIds));
    expect(together[0]?.text.toLowerCase()).toContain("blue");

    // The idle fast decoder keeps its KV cache until releaseMemory() gives it back; the next request regrows it.
    const held = (await fast.workerInfo()).model?.memory?.kvCacheBytes ?? 0;
    expect(held).toBeGreaterThan(0);
    const released = await fast.releaseMemory();
    expect(released).toMatchObject({ freedKvCacheBytes: held, memory: { kvCacheBytes: 0 } });
    expect((await fast.workerInfo()).model?.memory?.kvCacheBytes).toBe(0);
    expect((await fast.generate(blog, { maxNewTokens: 24 })).tokenIds).toEqual(expected[0]?.tokenIds);
    expect((await reference.releaseMemory()).freedKvCacheBytes).toBe(0);
  });

  it("fails to load a model that does not exist with MODEL_NOT_FOUND", async () => {
    await expect(Idefics2.load({ model: "/no/such/model/folder", python: testPython(), localFilesOnly: true })).rejects.toMatchObject({
      code: "MODEL_NOT_FOUND",
    });
  });
});

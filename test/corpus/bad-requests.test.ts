import { afterAll, beforeAll, describe, expect, it } from "vitest";
import sharp from "sharp";
import { GenerationError, ImageError, InvalidInputError } from "../../src/errors.js";
import { image, text, user, type Messages } from "../../src/messages.js";
import { Idefics2 } from "../../src/model.js";
import type { GenerateCallOptions } from "../../src/prepare-generation.js";
import { demoFirst, demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { colourQuestion, expectRefusal, expectServes } from "./corpus-helpers.js";

// Broken conversations and option values against one loaded model: each is refused with InvalidInputError
// (or, for what only the worker can know, GenerationError) quickly, and the same model keeps answering.

let model: Idefics2;

beforeAll(async () => {
  model = await Idefics2.load({ python: testPython() });
});

afterAll(async () => {
  await model?.close();
});

const question = [user(image(demoSecond), colourQuestion)];
const generate =
  (messages: unknown, options: GenerateCallOptions = {}) =>
  () =>
    model.generate(messages as Messages, options);

describe("broken conversations", () => {
  const cases: [what: string, messages: unknown, options: GenerateCallOptions, message: RegExp][] = [
    [
      "more image parts than images",
      [user(image(), image(), "Two?")],
      { images: [demoFirst] },
      /^The messages have 2 image parts but 1 image was given$/,
    ],
    [
      "fewer image parts than images",
      [user(image(), "One?")],
      { images: [demoFirst, demoSecond] },
      /^The messages have 1 image part but 2 images were given$/,
    ],
    [
      "image parts with no source and no `images`",
      [user(image(), "Which?")],
      {},
      /^1 of 1 image parts have no source and no `images` were given$/,
    ],
    [
      "images both on the parts and in `images`",
      question,
      { images: [demoFirst] },
      /^Images were given both on image parts and in the `images` option$/,
    ],
    ["an empty messages array", [], {}, /^Invalid messages: messages: give at least one message \(got an array of 0\)$/],
    ["a message with empty content", [{ role: "user", content: [] }], {}, /`0\.content`: a message needs at least one content part/],
    ["a wrong role", [{ role: "robot", content: [text("Beep?")] }], {}, /`0\.role`: .*"robot"/],
    [
      "a text part whose text is a number",
      [{ role: "user", content: [{ type: "text", text: 42 }] }],
      {},
      /`0\.content\.0\.text`: .*\(got 42\)/,
    ],
    ["an unknown part type", [{ role: "user", content: [{ type: "video", url: "x.mp4" }] }], {}, /`0\.content\.0\.type`/],
    ["messages that are not an array", null, {}, /^Invalid messages: messages: .*\(got null\)$/],
    ["a message with an unknown key", [{ role: "user", content: [text("Hi")], name: "eve" }], {}, /name/],
    ["an image source that is a number", [{ role: "user", content: [{ type: "image", source: 42 }] }], {}, /`0\.content\.0\.source`/],
  ];
  it.each(cases)("refuses %s", async (_what, messages, options, message) => {
    await expectRefusal(generate(messages, options), InvalidInputError, "INVALID_MESSAGES", message, 1000);
  });

  it("the model still answers", async () => {
    await expectServes(model);
  });
});

describe("absurd option values", () => {
  const cases: [what: string, options: Record<string, unknown>, message: RegExp][] = [
    ["maxNewTokens NaN", { maxNewTokens: Number.NaN }, /`maxNewTokens`: .*\(got NaN\)/],
    ["maxNewTokens -1", { maxNewTokens: -1 }, /`maxNewTokens`: .*\(got -1\)/],
    ["maxNewTokens 0", { maxNewTokens: 0 }, /`maxNewTokens`: .*\(got 0\)/],
    ["maxNewTokens 1e12", { maxNewTokens: 1e12 }, /`maxNewTokens`: .*\(got 1000000000000\)/],
    ["maxNewTokens 2.5", { maxNewTokens: 2.5 }, /`maxNewTokens`: .*\(got 2\.5\)/],
    ["maxNewTokens Infinity", { maxNewTokens: Number.POSITIVE_INFINITY }, /`maxNewTokens`: .*\(got Infinity\)/],
    ["maxNewTokens as a string", { maxNewTokens: "20" }, /`maxNewTokens`: .*\(got "20"\)/],
    ["temperature -1", { temperature: -1 }, /`temperature`: .*\(got -1\)/],
    ["temperature NaN", { temperature: Number.NaN }, /`temperature`: .*\(got NaN\)/],
    ["topP 2", { topP: 2 }, /`topP`: .*\(got 2\)/],
    ["topP 0", { topP: 0 }, /`topP`: .*\(got 0\)/],
    ["topK -1", { topK: -1 }, /`topK`: .*\(got -1\)/],
    ["numBeams 0", { numBeams: 0 }, /`numBeams`: .*\(got 0\)/],
    ["numBeams 1000", { numBeams: 1000 }, /`numBeams`: .*\(got 1000\)/],
    ["repetitionPenalty 0", { repetitionPenalty: 0 }, /`repetitionPenalty`: .*\(got 0\)/],
    ["seed -1", { seed: -1 }, /`seed`: .*\(got -1\)/],
    ["doSample as a string", { doSample: "yes" }, /`doSample`: .*\(got "yes"\)/],
    ["an empty stop string", { stopStrings: [""] }, /`stopStrings\.0`/],
    ["an unknown key (a typo)", { maxTokens: 5 }, /maxTokens/],
    ["several unknown keys", { max_new_tokens: 5, beams: 2 }, /max_new_tokens.*beams|beams.*max_new_tokens/],
    ["timeoutMs NaN", { timeoutMs: Number.NaN }, /^Invalid generation option: `timeoutMs`: must be a positive integer \(got NaN\)$/],
    ["timeoutMs -5", { timeoutMs: -5 }, /^Invalid generation option: `timeoutMs`: must be a positive integer \(got -5\)$/],
  ];
  it.each(cases)("refuses %s", async (_what, options, message) => {
    const error = await expectRefusal(
      generate(question, options as GenerateCallOptions),
      InvalidInputError,
      "INVALID_OPTIONS",
      message,
      1000,
    );
    expect(error.message).toMatch(/^Invalid generation option/);
  });

  // Only the worker compares the two; its refusal comes back as the same typed error.
  it("refuses minNewTokens above maxNewTokens, in the worker", async () => {
    await expectRefusal(
      generate(question, { maxNewTokens: 5, minNewTokens: 50 }),
      InvalidInputError,
      "INVALID_OPTIONS",
      /`minNewTokens` option to be at most maxNewTokens \(5\), got 50/,
    );
    await expectServes(model);
  });

  it("refuses unknown and absurd load options before starting anything", async () => {
    await expectRefusal(
      () => Idefics2.load({ modle: "x" } as never),
      InvalidInputError,
      "INVALID_OPTIONS",
      /^Invalid load option: .*modle/,
      500,
    );
    await expectRefusal(
      () => Idefics2.load({ images: { maxBytes: -1 } }),
      InvalidInputError,
      "INVALID_OPTIONS",
      /`images\.maxBytes`: .*\(got -1\)/,
      500,
    );
    await expectRefusal(
      () => Idefics2.load({ startupTimeoutMs: Number.NaN }),
      InvalidInputError,
      "INVALID_OPTIONS",
      /`startupTimeoutMs`: .*\(got NaN\)/,
      500,
    );
    await expectRefusal(
      () => Idefics2.load({ quantization: "3bit" as never }),
      InvalidInputError,
      "INVALID_OPTIONS",
      /`quantization`.*"3bit"/,
      500,
    );
  });

  it("the model still answers", async () => {
    await expectServes(model);
  });
});

describe("a prompt longer than the context", () => {
  it("refuses a text turn of more than 4096 tokens with CONTEXT_OVERFLOW, and keeps serving", async () => {
    expect(model.info.maxContext).toBe(4096);
    const long = "The quick brown fox jumps over the lazy dog. ".repeat(400); // 18000 characters
    const error = await expectRefusal(
      generate([user(long, colourQuestion)], { maxNewTokens: 5 }),
      GenerationError,
      "CONTEXT_OVERFLOW",
      /^The prompt is \d{4,5} tokens but the model's context is 4096 tokens$/,
    );
    expect(error.fix).toMatch(/shorter conversation/);
    await expectServes(model);
  });
});

describe("pictures past what one request may carry", () => {
  it("refuses four 10000×9000 pictures (1.01 GiB of pixels) with IMAGE_TOO_LARGE before the wire, and keeps serving", async () => {
    // Each is under the 100-megapixel `maxPixels`: only their sum is too much for one request.
    const huge = await sharp({ create: { width: 10000, height: 9000, channels: 3, background: "#0000ff" } })
      .png()
      .toBuffer();
    await expectRefusal(
      generate([user(image(huge), image(huge), image(huge), image(huge), colourQuestion)]),
      ImageError,
      "IMAGE_TOO_LARGE",
      /^The 4 pictures of this request decode to 1\.01 GiB of pixels .*over the 1 GiB one request may carry$/,
    );
    await expectServes(model);
  });
});

describe("shell metacharacters in a prompt", () => {
  it("are plain text", async () => {
    const prompt = `$(touch /tmp/idefics2-pwned) \`id\`; rm -rf ~ && echo "x" | cat > /dev/null ' \\ %s %n ${colourQuestion}`;
    const result = await model.generate([user(image(demoSecond), prompt)], { maxNewTokens: 12 });
    expect(result.tokenIds.length).toBeGreaterThan(0);
    expect(result.usage.promptTokens).toBeGreaterThan(prompt.length);
  });
});

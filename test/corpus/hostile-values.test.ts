import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InvalidInputError } from "../../src/errors.js";
import { image, text, user, type Messages } from "../../src/messages.js";
import { Idefics2 } from "../../src/model.js";
import type { LoadOptions } from "../../src/options.js";
import type { GenerateCallOptions } from "../../src/prepare-generation.js";
import { MAX_STOP_STRING_LENGTH, MAX_STOP_STRINGS, MIN_REPETITION_PENALTY, MIN_TEMPERATURE } from "../../src/protocol/option-ranges.js";
import { demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { colourQuestion, expectRefusal, expectServes } from "./corpus-helpers.js";

// Values that are well-typed but that the engine, Python or Node's timers cannot take: each is refused up front with
// a typed error naming the field (in well under a second, nothing reaching the worker), or, where the value is
// fine after all, answered. The same model keeps serving throughout.

const REFUSED_WITHIN_MS = 1000;
let model: Idefics2;

beforeAll(async () => {
  model = await Idefics2.load({ python: testPython() });
});

afterAll(async () => {
  await model?.close();
});

const question = [user(image(demoSecond), colourQuestion)];
const generate = (messages: unknown, options?: unknown) => () => model.generate(messages as Messages, options as GenerateCallOptions);
const refusesOption = (call: () => Promise<unknown>, field: RegExp) =>
  expectRefusal(call, InvalidInputError, "INVALID_OPTIONS", field, REFUSED_WITHIN_MS);

// Lone surrogates: half of a UTF-16 pair, which JSON carries but Python cannot encode (a file name, the tokenizer).
const LONE = ["\ud800", "\udfff", "a\udbffb", "/nonexistent/\ud800"];

describe("strings that are not well-formed Unicode", () => {
  it.each(LONE)("a text part holding %j is INVALID_MESSAGES naming it", async (lone) => {
    await expectRefusal(
      generate([user(image(demoSecond), text(`${colourQuestion} ${lone}`))]),
      InvalidInputError,
      "INVALID_MESSAGES",
      /`0\.content\.1\.text`: must be well-formed Unicode/,
      REFUSED_WITHIN_MS,
    );
  });

  it.each(LONE)("a stop string holding %j is INVALID_OPTIONS naming it", async (lone) => {
    await refusesOption(generate(question, { stopStrings: ["ok", lone] }), /`stopStrings\.1`: must be well-formed Unicode/);
  });

  it.each([
    ["model", { model: "/nonexistent/\ud800" }, /`model`: must be well-formed Unicode/],
    ["model (a hub id)", { model: "org/\udc00name" }, /`model`: must be well-formed Unicode/],
    ["revision", { revision: "main\ud800" }, /`revision`: must be well-formed Unicode/],
    [
      "skipModules",
      { quantization: { mode: "8bit", skipModules: ["lm_head\ud800"] } },
      /`quantization\.skipModules\.0`: must be well-formed/,
    ],
    ["python", { python: "/usr/bin/python\ud800" }, /`python`: must be well-formed Unicode/],
    ["home", { home: "/tmp/home\ud800" }, /`home`: must be well-formed Unicode/],
  ] as const)("a load option %s holding a lone surrogate is INVALID_OPTIONS at once, not a hang", async (_what, options, field) => {
    await refusesOption(() => Idefics2.load({ python: testPython(), ...options } as LoadOptions), field);
  });

  it("well-formed text beyond the basic plane is fine, and the model still answers", async () => {
    const stopStrings = ["😀", "😀".repeat(MAX_STOP_STRING_LENGTH)];
    const result = await model.generate([user(image(demoSecond), `${colourQuestion} 😀 中文`)], { maxNewTokens: 8, stopStrings });
    expect(result.tokenIds.length).toBeGreaterThan(0);
    await expectServes(model);
  });
});

describe("stop strings are bounded in count and length", () => {
  const longest = "x".repeat(MAX_STOP_STRING_LENGTH);
  it.each([
    ["one of 1 MiB", ["s".repeat(1 << 20)], /`stopStrings\.0`: must be a non-empty string of at most 32 characters/],
    ["64 of 64 KiB", Array.from({ length: 64 }, () => "s".repeat(64 * 1024)), /`stopStrings`: must be an array of 1 to 16 items/],
    ["one more than allowed", Array.from({ length: MAX_STOP_STRINGS + 1 }, () => "x"), /`stopStrings`: must be an array of 1 to 16/],
    ["one character too long", ["ok", `${longest}x`], /`stopStrings\.1`: must be a non-empty string of at most 32 characters/],
    ["33 emoji (characters, as Python counts them)", ["😀".repeat(33)], /`stopStrings\.0`: must be a non-empty string of at most 32/],
  ])("%s is INVALID_OPTIONS before anything runs", async (_what, stopStrings, field) => {
    await refusesOption(generate(question, { stopStrings }), field);
  });

  it("the most allowed, repetitive on purpose (the costliest to match), still answers within 10 s", async () => {
    const stopStrings = Array.from(
      { length: MAX_STOP_STRINGS },
      (_, i) => `${"a".repeat(MAX_STOP_STRING_LENGTH - 1 - (i % 4))}${"b".repeat(1 + (i % 4))}`,
    );
    const started = performance.now();
    const result = await model.generate(question, { maxNewTokens: 12, stopStrings, timeoutMs: 10_000 });
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(result.text.toLowerCase()).toContain("blue");
  });
});

describe("sampling values the engine cannot take", () => {
  it.each([
    ["temperature 1e-300", { doSample: true, temperature: 1e-300 }, /`temperature`: must be a number from 0\.0001 to 100 \(got 1e-300\)/],
    ["temperature 5e-324", { doSample: true, temperature: Number.MIN_VALUE }, /`temperature`: must be a number from 0\.0001/],
    ["temperature just under the floor", { doSample: true, temperature: MIN_TEMPERATURE * 0.999 }, /`temperature`/],
    ["repetitionPenalty 1e-300", { repetitionPenalty: 1e-300 }, /`repetitionPenalty`: must be a number from 0\.0001 to 100/],
  ])("%s is INVALID_OPTIONS, not GENERATION_FAILED on NaN probabilities", async (_what, options, field) => {
    await refusesOption(generate(question, options), field);
  });

  it.each([
    ["the lowest temperature", { doSample: true, temperature: MIN_TEMPERATURE, seed: 1 }],
    ["the lowest repetition penalty", { doSample: true, repetitionPenalty: MIN_REPETITION_PENALTY, seed: 1 }],
    ["the highest temperature and penalty", { doSample: true, temperature: 100, repetitionPenalty: 100, seed: 1 }],
    ["the smallest topP", { doSample: true, topP: Number.MIN_VALUE, seed: 1 }],
    ["a topK beyond the vocabulary", { doSample: true, topK: Number.MAX_SAFE_INTEGER, seed: 1 }],
    ["a noRepeatNgramSize beyond any text", { noRepeatNgramSize: Number.MAX_SAFE_INTEGER }],
  ])("%s at its bound is sampled without error", async (_what, options) => {
    const result = await model.generate(question, { maxNewTokens: 6, ...options });
    expect(["stop", "length"]).toContain(result.finishReason);
  });
});

describe("timers beyond what Node holds (2^31 − 1 ms)", () => {
  it.each([2 ** 31, 1e15])("a generate timeoutMs of %d does not fire at once", async (timeoutMs) => {
    const result = await model.generate(question, { maxNewTokens: 8, timeoutMs });
    expect(result.text.toLowerCase()).toContain("blue");
  });

  it.each([
    [
      "startupTimeoutMs",
      { startupTimeoutMs: 2 ** 31 },
      /`startupTimeoutMs`: must be an integer from 1 to 2,147,483,647 \(got 2147483648\)/,
    ],
    ["startupTimeoutMs", { startupTimeoutMs: 1e15 }, /`startupTimeoutMs`: .*\(got 1000000000000000\)/],
    [
      "images.fetchTimeoutMs",
      { images: { fetchTimeoutMs: 2 ** 31 } },
      /`images\.fetchTimeoutMs`: must be an integer from 1 to 2,147,483,647/,
    ],
    ["images.readTimeoutMs", { images: { readTimeoutMs: 1e15 } }, /`images\.readTimeoutMs`: must be an integer from 1 to 2,147,483,647/],
  ])("a load option %s past it is INVALID_OPTIONS", async (_what, options, field) => {
    await refusesOption(() => Idefics2.load({ python: testPython(), ...options } as LoadOptions), field);
  });
});

describe("options of the wrong shape", () => {
  it.each([
    ["options null", null, /^Invalid generation option: generation option: must be an object .*\(got null\)$/],
    ["options a number", 5, /\(got 5\)$/],
    ["images a string", { images: "a" }, /^Invalid generation option: `images`: must be an array \(got "a"\)$/],
    ["images an object", { images: { 0: demoSecond, length: 1 } }, /`images`: must be an array \(got object\)$/],
    ["5,000 unknown keys", Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`key${i}`, i])), /and 4995 more$/],
    ["a key forging an error line", { "x\nidefics2: error [FORGED]: y": 1 }, /unknown key `x\\nidefics2: error \[FORGED\]: y`$/],
  ])("%s is INVALID_OPTIONS, not a TypeError, in one short line", async (_what, options, message) => {
    await refusesOption(generate([user(image(), colourQuestion)], options), message);
  });

  it("the model still answers", async () => {
    await expectServes(model);
  });
});

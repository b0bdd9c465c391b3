import { describe, expect, it } from "vitest";
import { InvalidInputError } from "../../src/errors.js";
import { Messages } from "../../src/messages.js";
import { GenerationOptions, LoadOptions } from "../../src/options.js";
import { parseOrThrow } from "../../src/parse-or-throw.js";

// What a user calling from plain JavaScript reads when a value is refused: the option, what it must be, what came.
function refusal(schema: Parameters<typeof parseOrThrow>[0], value: unknown, what: string): string {
  try {
    parseOrThrow(schema, value, schema === Messages ? "INVALID_MESSAGES" : "INVALID_OPTIONS", what);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidInputError);
    return (error as InvalidInputError).message;
  }
  throw new Error(`${JSON.stringify(value)} was accepted`);
}

describe("an invalid enum value names the allowed values and the value received", () => {
  it.each([
    [
      { quantization: "3bit" },
      '`quantization`: must be one of "none", "8bit", "4bit" or an object { mode, quantType, doubleQuant, computeDtype, skipModules, int8Threshold } (got "3bit")',
    ],
    [{ dtype: "float8" }, '`dtype`: must be one of "auto", "float32", "bfloat16" or "float16" (got "float8")'],
    [{ deviceMap: "gpu" }, '`deviceMap`: must be "auto", "cpu", "cuda" or "cuda:N" (got "gpu")'],
    [{ deviceMap: "cuda:x" }, '`deviceMap`: must be "auto", "cpu", "cuda" or "cuda:N" (got "cuda:x")'],
    [{ decoder: "turbo" }, '`decoder`: must be one of "auto", "fast" or "reference" (got "turbo")'],
    [
      { attnImplementation: "flash" },
      '`attnImplementation`: must be one of "eager", "sdpa", "flash_attention_2", "flash_attention_3", "flash_attention_4" or "flex_attention" (got "flash")',
    ],
  ])("load(%j)", (input, problem) => {
    expect(refusal(LoadOptions, input, "load option")).toBe(`Invalid load option: ${problem}`);
  });

  it("says each alternative of a union briefly", () => {
    expect(refusal(LoadOptions, { deviceMap: 3 }, "load option")).toBe(
      'Invalid load option: `deviceMap`: must be one of "auto", "cpu", "cuda" or a string matching /^cuda:(0|[1-9][0-9]*)$/ (got 3)',
    );
    expect(refusal(Messages, [{ role: "user", content: [{ type: "image", source: 42 }] }], "messages")).toBe(
      "Invalid messages: `0.content.0.source`: must be one of a non-empty string, a URL, a Buffer or Uint8Array or a sharp instance (got 42)",
    );
  });

  it("points into the object form of a union when only one of its fields is wrong", () => {
    expect(refusal(LoadOptions, { quantization: { mode: "4bit", quantType: "nf5" } }, "load option")).toBe(
      'Invalid load option: `quantization.quantType`: must be "nf4" or "fp4" (got "nf5")',
    );
    expect(refusal(LoadOptions, { quantization: {} }, "load option")).toBe(
      'Invalid load option: `quantization.mode`: must be one of "none", "8bit" or "4bit" (missing)',
    );
  });

  it("names the allowed values of a discriminator and an enum inside messages", () => {
    expect(refusal(Messages, [{ role: "robot", content: [{ type: "video" }] }], "messages")).toBe(
      'Invalid messages: `0.role`: must be one of "user", "assistant" or "system" (got "robot"); `0.content.0.type`: must be "image" or "text" (got "video")',
    );
  });
});

describe("other refusals say what the value must be", () => {
  it.each([
    [{ maxNewTokens: 0 }, "`maxNewTokens`: must be an integer from 1 to 1,000,000 (got 0)"],
    [{ maxNewTokens: "20" }, '`maxNewTokens`: must be an integer from 1 to 1,000,000 (got "20")'],
    [{ numBeams: 1.5 }, "`numBeams`: must be an integer from 1 to 64 (got 1.5)"],
    [{ temperature: 0 }, "`temperature`: must be a number from 0.0001 to 100 (got 0)"],
    [{ topK: Number.NaN }, "`topK`: must be a non-negative integer (got NaN)"],
    [{ doSample: "yes" }, '`doSample`: must be true or false (got "yes")'],
    [
      { stopStrings: [] },
      "`stopStrings`: must be an array of 1 to 16 items, each a non-empty string of at most 32 characters (got an array of 0)",
    ],
    [{ stopStrings: ["a", ""] }, '`stopStrings.1`: must be a non-empty string of at most 32 characters (got "")'],
    [{ max_new_tokens: 5, beams: 2 }, "unknown keys `max_new_tokens` (did you mean `maxNewTokens`?), `beams`"],
  ])("generate(%j)", (input, problem) => {
    expect(refusal(GenerationOptions, input, "generation option")).toBe(`Invalid generation option: ${problem}`);
  });

  it.each([
    [{ modle: "x" }, "unknown key `modle` (did you mean `model`?)"],
    [{ images: { maxByte: 5 } }, "`images`: unknown key `maxByte` (did you mean `maxBytes`?)"],
    [{ images: { maxBytes: -1 } }, "`images.maxBytes`: must be a positive integer (got -1)"],
    [{ longestEdge: -3 }, "`longestEdge`: must be an integer from 1 to 65,536 (got -3)"],
    [{ model: "  " }, '`model`: must be a model folder or hub id, not a blank string (got "  ")'],
  ])("load(%j)", (input, problem) => {
    expect(refusal(LoadOptions, input, "load option")).toBe(`Invalid load option: ${problem}`);
  });

  it("keeps a schema's own message", () => {
    expect(refusal(Messages, [], "messages")).toBe("Invalid messages: messages: give at least one message (got an array of 0)");
    expect(refusal(Messages, [{ role: "user", content: [] }], "messages")).toBe(
      "Invalid messages: `0.content`: a message needs at least one content part (got an array of 0)",
    );
  });

  it("lists every problem at once, in the order of the input", () => {
    expect(refusal(GenerationOptions, { topP: 2, seed: -1 }, "generation option")).toBe(
      "Invalid generation option: `topP`: must be a number greater than 0 and at most 1 (got 2); `seed`: must be a non-negative integer (got -1)",
    );
  });
});

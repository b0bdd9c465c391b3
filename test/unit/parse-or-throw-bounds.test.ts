import { describe, expect, it } from "vitest";
import { InvalidInputError } from "../../src/errors.js";
import { Messages, text, user } from "../../src/messages.js";
import { GenerateCallOptionsSchema, GenerationOptions, LoadOptions } from "../../src/options.js";
import { parseOrThrow } from "../../src/parse-or-throw.js";

// A refusal quotes the input; the input can be any size and hold any character. The message stays one short line.
const UNSAFE = /[\p{Cc}\u2028\u2029\u202a-\u202e\u2066-\u2069]|\p{Cs}/u;
const MAX_MESSAGE = 400;

function refusal(
  schema: Parameters<typeof parseOrThrow>[0],
  value: unknown,
  code: "INVALID_OPTIONS" | "INVALID_MESSAGES" = "INVALID_OPTIONS",
) {
  const started = performance.now();
  try {
    parseOrThrow(schema, value, code, "option");
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidInputError);
    const message = (error as InvalidInputError).message;
    expect(message).not.toMatch(UNSAFE);
    expect(message.length).toBeLessThanOrEqual(MAX_MESSAGE);
    expect(performance.now() - started).toBeLessThan(1000);
    return message;
  }
  throw new Error("accepted");
}

const manyKeys = (count: number, make: (index: number) => string) =>
  Object.fromEntries(Array.from({ length: count }, (_, i) => [make(i), 1]));

describe("many or huge unknown keys", () => {
  it.each([
    ["5,000 short keys", manyKeys(5000, (i) => `key${i}`), /unknown keys `key0`, `key1`, `key2`, `key3`, `key4` and 4995 more$/],
    ["5,000 keys of 1 KiB", manyKeys(5000, (i) => `${i}`.padEnd(1024, "k")), /and 4995 more$/],
    ["one key of 1 MiB", manyKeys(1, () => "k".repeat(1 << 20)), /^Invalid option: unknown key `k{39}…`$/],
    [
      "a key forging a second error line",
      manyKeys(1, () => "x\nidefics2: error [FORGED]: y"),
      /^Invalid option: unknown key `x\\nidefics2: error \[FORGED\]: y`$/,
    ],
  ])("%s are named a few at a time, escaped and cut", (_what, value, expected) => {
    expect(refusal(GenerationOptions, value)).toMatch(expected);
  });

  it("still suggests the key a typo meant", () => {
    expect(refusal(LoadOptions, { modle: "x" })).toMatch(/`modle` \(did you mean `model`\?\)/);
  });
});

describe("many bad values", () => {
  it("lists three problems and counts the rest", () => {
    const messages = Array.from({ length: 5000 }, () => ({ role: "robot", content: [] }));
    expect(refusal(Messages, messages, "INVALID_MESSAGES")).toMatch(/; and \d{4} more problems$/);
  });

  it("escapes a hostile nested key", () => {
    expect(refusal(LoadOptions, { images: { "\u001b[2K\rfetchTimeoutMs": 1 } })).toMatch(
      /`images`: unknown key `\\u001b\[2K\\rfetchTimeoutMs`/,
    );
  });

  it.each([["\n"], ["\r"], ["\u001b[31m"], ["\u2028"], ["\u0085"], ["\u202e"]])("escapes %j in a value quoted back", (character) => {
    const message = refusal(Messages, [user(text("ok")), { role: `user${character}`, content: [text("x")] }], "INVALID_MESSAGES");
    expect(message).toContain("`1.role`");
  });
});

describe("the call options are one object, checked whole", () => {
  it.each([
    [null, /^Invalid option: option: must be an object .*\(got null\)$/],
    ["fast", /\(got "fast"\)$/],
    [{ images: "a" }, /^Invalid option: `images`: must be an array \(got "a"\)$/],
    [{ images: 42 }, /`images`: must be an array \(got 42\)$/],
    [{ timeoutMs: 1.5 }, /`timeoutMs`: must be a positive integer \(got 1\.5\)$/],
  ])("%j is INVALID_OPTIONS, not a TypeError", (value, expected) => {
    expect(refusal(GenerateCallOptionsSchema, value)).toMatch(expected);
  });
});

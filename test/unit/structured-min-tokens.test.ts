import { describe, expect, it } from "vitest";
import { z } from "zod";
import { InvalidInputError } from "../../src/errors.js";
import { user } from "../../src/messages.js";
import { ImageLimits } from "../../src/options.js";
import { prepareGeneration } from "../../src/prepare-generation.js";

// minNewTokens forbids the end of the answer, and a complete structured answer allows nothing else: refused together.

const limits = ImageLimits.parse({});
const prepare = (options: Parameters<typeof prepareGeneration>[1]) => prepareGeneration([user("x")], options, limits, { stream: false });

describe("minNewTokens with structured output", () => {
  it.each([
    ["schema", { schema: z.object({ a: z.string() }) }],
    ["choices", { choices: ["red", "green"] }],
    ["regex", { regex: "[0-9]+" }],
  ] as const)("is INVALID_OPTIONS with %s, saying why and what to do", async (name, structure) => {
    const refused = await prepare({ ...structure, minNewTokens: 5 }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(InvalidInputError);
    expect(refused).toMatchObject({
      code: "INVALID_OPTIONS",
      message: expect.stringMatching(new RegExp(`\`minNewTokens\` cannot be combined with \`${name}\`.*past the end`)),
      fix: expect.stringContaining("Leave `minNewTokens` out"),
    });
  });

  it("is accepted at 0, and on its own", async () => {
    expect((await prepare({ choices: ["a"], minNewTokens: 0 })).params.options.grammar).toEqual({ type: "regex", source: "a" });
    expect((await prepare({ minNewTokens: 5 })).params.options.minNewTokens).toBe(5);
  });
});

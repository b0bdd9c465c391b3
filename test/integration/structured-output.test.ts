import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { InvalidInputError, StructuredOutputError } from "../../src/errors.js";
import { image, user } from "../../src/messages.js";
import { Idefics2 } from "../../src/model.js";
import { demoFirst, demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";

// Structured output against the real worker on the embedded model, with both decoders: the grammar (llguidance)
// makes every answer parse and validate, greedy or sampled, with pictures; a free request batched beside
// structured ones gets the tokens it gets alone.

const models: Record<"reference" | "fast", Idefics2 | undefined> = { reference: undefined, fast: undefined };

beforeAll(async () => {
  models.reference = await Idefics2.load({ python: testPython(), decoder: "reference" });
  models.fast = await Idefics2.load({ python: testPython(), decoder: "fast" });
});

afterAll(async () => {
  await models.reference?.close();
  await models.fast?.close();
});

function loaded(decoder: "reference" | "fast"): Idefics2 {
  const model = models[decoder];
  if (!model) throw new Error(`the ${decoder} model did not load`);
  return model;
}

const Colour = z.enum(["red", "green", "blue", "yellow"]);
// Bounded (maxLength, maxItems, integers) so every answer closes well inside maxNewTokens.
const SCHEMAS = {
  nested: z.object({ shape: z.object({ kind: z.enum(["square", "circle"]), colour: z.object({ name: Colour }) }) }),
  array: z.object({ colours: z.array(Colour).min(1).max(3) }),
  enums: z.object({ colour: Colour, size: z.enum(["small", "big"]) }),
  ranges: z.object({ count: z.int().min(0).max(9), score: z.int().min(-5).max(100) }),
  optional: z.object({ label: z.string().max(6), note: z.string().max(6).optional(), sides: z.int().min(3).max(8).optional() }),
};
const PICTURES = [demoFirst, demoSecond];
// Per picture: greedy, and sampled with four seeds; 5 schemas × 2 pictures × 5 = 50 generations per decoder.
const RUNS = [{}, ...[1, 2, 3, 4].map((seed) => ({ doSample: true, temperature: 1.3, seed }))];

describe.each(["reference", "fast"] as const)("structured output with the %s decoder", (decoder) => {
  it("gives 50 answers that parse and validate: 5 schemas, greedy and sampled, with pictures", async () => {
    const model = loaded(decoder);
    const calls = Object.entries(SCHEMAS).flatMap(([name, schema]) =>
      PICTURES.flatMap((picture) =>
        RUNS.map(async (run) => {
          const result = await model.generate([user(image(picture), "Describe the shape as JSON.")], {
            schema,
            maxNewTokens: 120,
            ...run,
          });
          expect(schema.safeParse(JSON.parse(result.text)), name).toMatchObject({ success: true });
          expect(result.finishReason, name).toBe("stop");
          return { name, run, object: result.object };
        }),
      ),
    );
    // The fast decoder batches them (all started at once); the reference one runs them one at a time.
    const results = await Promise.all(calls);
    expect(results).toHaveLength(50);
    const typed: { colours: ("red" | "green" | "blue" | "yellow")[] } | undefined = results.find((r) => r.name === "array")?.object as
      | z.infer<typeof SCHEMAS.array>
      | undefined;
    expect(typed?.colours.length).toBeGreaterThan(0);
    // Sampling reaches more than one answer per schema.
    expect(new Set(results.filter((r) => r.name === "optional").map((r) => JSON.stringify(r.object))).size).toBeGreaterThan(1);
  });

  it("streams the structured text as it forms, and types `object` by choices and regex", async () => {
    const model = loaded(decoder);
    const stream = model.stream([user(image(demoFirst), "What colour?")], { schema: SCHEMAS.enums });
    let streamed = "";
    for await (const delta of stream) streamed += delta;
    const result = await stream;
    expect(streamed).toBe(result.text);
    expect(result.object).toEqual(JSON.parse(streamed));
    const colour: "red" | "green" = (await model.generate([user(image(demoFirst), "What colour?")], { choices: ["red", "green"] })).object;
    expect(["red", "green"]).toContain(colour);
    const number = await model.generate([user("How many?")], { regex: "[1-9][0-9]?" });
    expect(number.object).toMatch(/^[1-9][0-9]?$/);
    expect(number.object).toBe(number.text);
  });

  it("rejects an answer cut off by maxNewTokens with INCOMPLETE_STRUCTURE and its partial text", async () => {
    const model = loaded(decoder);
    const failure = await model
      .generate([user("JSON please")], { schema: SCHEMAS.nested, maxNewTokens: 4 })
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(StructuredOutputError);
    expect(failure).toMatchObject({ code: "INCOMPLETE_STRUCTURE", text: expect.stringMatching(/^\{/) });
    expect((failure as StructuredOutputError).result).toMatchObject({ finishReason: "incomplete_structure" });
  });

  it("refuses a schema the engine cannot compile with INVALID_OPTIONS naming the construct", async () => {
    const model = loaded(decoder);
    const refused = await model
      .generate([user("x")], { schema: { type: "object", not: { required: ["a"] } } })
      .catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(InvalidInputError);
    expect(refused).toMatchObject({ code: "INVALID_OPTIONS", message: expect.stringContaining("not") });
  });
});

describe("structured output in a batch", () => {
  it("leaves a free request's tokens as they are alone, with structured ones beside it", async () => {
    const model = loaded("fast");
    const free = () => model.generate([user(image(demoSecond), "What colour is this?")], { maxNewTokens: 24 });
    const alone = await free();
    const [first, beside, second] = await Promise.all([
      model.generate([user(image(demoFirst), "JSON")], { schema: SCHEMAS.nested, maxNewTokens: 80 }),
      free(),
      model.generate([user("Pick one")], { choices: ["red", "green", "blue"], doSample: true, seed: 5 }),
    ]);
    expect(beside.tokenIds).toEqual(alone.tokenIds);
    expect(SCHEMAS.nested.parse(first.object)).toEqual(first.object);
    expect(["red", "green", "blue"]).toContain(second.object);
  });

  it("answers a chat turn with a schema, and the turn joins the history as its JSON", async () => {
    const chat = loaded("fast").chat({ maxNewTokens: 60 });
    const answer = await chat.send([image(demoFirst), "Describe it"], { schema: SCHEMAS.enums });
    expect(SCHEMAS.enums.parse(answer.object)).toEqual(answer.object);
    expect(chat.messages.at(-1)).toEqual({ role: "assistant", content: [{ type: "text", text: answer.text.trim() }] });
  });
});

describe("structured options checked before the worker", () => {
  it("refuse two forms at once, a zod type JSON cannot carry, and empty choices", async () => {
    const model = loaded("reference");
    const messages = [user("x")];
    const attempts = [
      model.generate(messages, { schema: SCHEMAS.enums, choices: ["a"] }),
      model.generate(messages, { schema: z.object({ when: z.date() }) }),
      model.generate(messages, { choices: [] }),
      model.generate(messages, { regex: "" }),
    ];
    for (const attempt of attempts) {
      await expect(attempt).rejects.toMatchObject({ name: "InvalidInputError", code: "INVALID_OPTIONS" });
    }
  });
});

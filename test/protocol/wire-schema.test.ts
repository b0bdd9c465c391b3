import { readFileSync } from "node:fs";
import { describe, expect, expectTypeOf, it } from "vitest";
import { z } from "zod";
import { DeviceMap, GenerationOptions, LoadOptions, QuantizationOptions } from "../../src/options.js";
import { GenerateParams, LoadParams, QuantizationParams, WireGenerationOptions } from "../../src/protocol/messages.js";
import { renderWireSchema } from "../../src/protocol/wire-schema.js";

const committed = new URL("../../docs/wire-schema.json", import.meta.url);

// The range a field allows, without what only says whether it may be left out or null.
function range(schema: z.ZodType): unknown {
  let inner: z.ZodType = schema;
  while (inner instanceof z.ZodOptional || inner instanceof z.ZodNullable || inner instanceof z.ZodDefault)
    inner = inner.unwrap() as z.ZodType;
  return z.toJSONSchema(inner, { io: "input" });
}

describe("docs/wire-schema.json", () => {
  it("is what the zod schemas generate now", () => {
    expect(readFileSync(committed, "utf8"), "docs/wire-schema.json is stale: run `npm run wire-schema` and commit the file").toBe(
      renderWireSchema(),
    );
  });

  it("names a definition for every params and result shape", () => {
    const schema = JSON.parse(renderWireSchema()) as { $defs: Record<string, unknown>; "x-methods": Record<string, unknown> };
    expect(Object.keys(schema["x-methods"])).toEqual(["ping", "load", "generate", "info", "releaseMemory"]);
    expect(Object.keys(schema.$defs)).toEqual(
      expect.arrayContaining([
        "LoadParams",
        "QuantizationParams",
        "GenerateParams",
        "WireGenerationOptions",
        "LoadResult",
        "GenerateResult",
        "InfoResult",
        "ReleaseMemoryResult",
        "MemoryUse",
      ]),
    );
  });
});

describe("the user-facing options and the wire", () => {
  it("allow the same range for every generation option", () => {
    // `grammar` is built from a call's `schema`, `choices` or `regex` (structured-output.ts), not a user option.
    const { grammar: _grammar, ...wire } = WireGenerationOptions.shape;
    const user = GenerationOptions.shape;
    expect(Object.keys(user).sort()).toEqual(Object.keys(wire).sort());
    for (const key of Object.keys(wire) as (keyof typeof wire)[]) expect(range(user[key]), key).toEqual(range(wire[key]));
  });

  it("allow the same range for every load option the worker receives", () => {
    const user = LoadOptions.shape;
    const wire = LoadParams.shape;
    // model.ts loadParams() sends these under the wire's names; `quantization` is compared field by field below.
    const sent = {
      model: "model",
      revision: "revision",
      deviceMap: "deviceMap",
      dtype: "dtype",
      attnImplementation: "attnImplementation",
      imageSplitting: "doImageSplitting",
      longestEdge: "longestEdge",
      trustRemoteCode: "trustRemoteCode",
      localFilesOnly: "localFilesOnly",
      decoder: "decoder",
      maxBatchSize: "maxBatchSize",
      maxMemory: "maxMemory",
      deterministic: "deterministic",
    } as const;
    expect([...Object.values(sent), "quantization"].sort()).toEqual(Object.keys(wire).sort());
    for (const [userKey, wireKey] of Object.entries(sent))
      expect(range(user[userKey as keyof typeof sent]), userKey).toEqual(range(wire[wireKey]));
    const quantization = QuantizationOptions.shape;
    expect(Object.keys(quantization).sort()).toEqual(Object.keys(QuantizationParams.shape).sort());
    for (const key of Object.keys(quantization) as (keyof typeof quantization)[])
      expect(range(quantization[key]), key).toEqual(range(QuantizationParams.shape[key]));
  });

  it("type deviceMap as the device strings the worker accepts", () => {
    expectTypeOf<DeviceMap>().toEqualTypeOf<"auto" | "cpu" | "cuda" | `cuda:${number}`>();
    expect(["auto", "cpu", "cuda", "cuda:0", "cuda:12"].map((value) => DeviceMap.safeParse(value).success)).toEqual([
      true,
      true,
      true,
      true,
      true,
    ]);
    expect(["cuda:01", "cuda:-1", "gpu", "", { vision_model: "cpu" }].map((value) => DeviceMap.safeParse(value).success)).toEqual([
      false,
      false,
      false,
      false,
      false,
    ]);
  });

  it("take a key left out as its default, as the worker does", () => {
    const load = LoadParams.parse({ model: "m" });
    expect(load).toMatchObject({
      deviceMap: "auto",
      dtype: "auto",
      decoder: "auto",
      maxBatchSize: 8,
      trustRemoteCode: false,
      attnImplementation: null,
      deterministic: false,
    });
    expect(load.quantization).toEqual({
      mode: "none",
      quantType: null,
      doubleQuant: null,
      computeDtype: null,
      skipModules: null,
      int8Threshold: null,
    });
    const generate = GenerateParams.parse({
      messages: [{ role: "user", content: [{ type: "text", text: "hi" }] }],
      options: { maxNewTokens: 5 },
    });
    expect(generate).toMatchObject({ images: [], stream: false, options: { maxNewTokens: 5, seed: null } });
  });

  it("refuse on both sides what the worker refuses", () => {
    expect(GenerationOptions.safeParse({ seed: Number.MAX_SAFE_INTEGER }).success).toBe(true);
    expect(GenerationOptions.safeParse({ seed: Number.MAX_SAFE_INTEGER + 1 }).success).toBe(false);
    expect(GenerationOptions.safeParse({ stopStrings: [] }).success).toBe(false);
    expect(WireGenerationOptions.safeParse({ maxNewTokens: 5, seed: 2 ** 53 }).success).toBe(false);
    expect(LoadParams.safeParse({ model: "m", deviceMap: null }).success).toBe(false);
    expect(LoadParams.safeParse({ model: "m", attnImplementation: "paged|sdpa" }).success).toBe(false);
  });
});

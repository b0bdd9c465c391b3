import { describe, expect, it } from "vitest";
import { embeddedModelPath } from "../../src/embedded-model.js";
import { InvalidInputError } from "../../src/errors.js";
import { GenerationOptions, LoadOptions } from "../../src/options.js";
import { parseOrThrow } from "../../src/parse-or-throw.js";

describe("load options", () => {
  it("default to the embedded model, no quantization, device_map auto, dtype auto, no remote code", () => {
    expect(LoadOptions.parse({})).toMatchObject({
      model: embeddedModelPath,
      quantization: "none",
      deviceMap: "auto",
      dtype: "auto",
      trustRemoteCode: false,
      decoder: "auto",
      maxBatchSize: 8,
    });
  });

  it("accept the quantization shorthands and the full bitsandbytes settings", () => {
    expect(LoadOptions.parse({ quantization: "8bit" }).quantization).toBe("8bit");
    const full = {
      mode: "4bit",
      quantType: "fp4",
      doubleQuant: true,
      computeDtype: "bfloat16",
      skipModules: ["lm_head", "model.vision_model"],
    };
    expect(LoadOptions.parse({ quantization: full }).quantization).toEqual(full);
  });

  it.each([
    [{ quantization: "3bit" }, /quantization/],
    [{ deviceMap: "gpu" }, /deviceMap/],
    [{ deviceMap: "cuda:x" }, /deviceMap/],
    [{ dtype: "float8" }, /dtype/],
    [{ modle: "typo" }, /modle/],
    [{ longestEdge: -3 }, /longestEdge.*got -3/],
    [{ decoder: "turbo" }, /decoder/],
    [{ maxBatchSize: 0 }, /maxBatchSize/],
    [{ maxBatchSize: 65 }, /maxBatchSize/],
  ])("refuse %j with an error naming the option", (input, pattern) => {
    expect(() => parseOrThrow(LoadOptions, input, "INVALID_OPTIONS", "load option")).toThrow(pattern);
    expect(() => parseOrThrow(LoadOptions, input, "INVALID_OPTIONS", "load option")).toThrow(InvalidInputError);
  });
});

describe("generation options", () => {
  it("default to 500 new tokens, as the blog asks", () => {
    expect(GenerationOptions.parse({})).toEqual({ maxNewTokens: 500 });
  });

  it.each([
    [{ maxNewTokens: Number.NaN }, /maxNewTokens/],
    [{ maxNewTokens: -1 }, /maxNewTokens.*got -1/],
    [{ maxNewTokens: 1.5 }, /maxNewTokens/],
    [{ temperature: 0 }, /temperature/],
    [{ topP: 1.5 }, /topP/],
    [{ numBeams: 1e9 }, /numBeams/],
    [{ seed: -4 }, /seed/],
    [{ stopStrings: [""] }, /stopStrings/],
    [{ maxTokens: 5 }, /maxTokens/],
  ])("refuse %j with an INVALID_OPTIONS error naming the option", (input, pattern) => {
    const attempt = () => parseOrThrow(GenerationOptions, input, "INVALID_OPTIONS", "generation option");
    expect(attempt).toThrow(pattern);
    expect(attempt).toThrow(expect.objectContaining({ code: "INVALID_OPTIONS" }));
  });
});

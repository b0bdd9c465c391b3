import { describe, expectTypeOf, it } from "vitest";
import {
  type GenerateCallOptions,
  type GenerationResult,
  type GenerationStream,
  Idefics2,
  type Idefics2Error,
  type ErrorCode,
  type LoadOptions,
  type Message,
  type WorkerCrashedError,
} from "../../src/index.js";

describe("the public types", () => {
  it("type load, generate and stream end to end", () => {
    expectTypeOf(Idefics2.load).parameter(0).toEqualTypeOf<(LoadOptions & import("../../src/model.js").LoadCallOptions) | undefined>();
    expectTypeOf(Idefics2.load).returns.resolves.toEqualTypeOf<Idefics2>();
    expectTypeOf<Idefics2["generate"]>().parameters.toEqualTypeOf<[Message[], GenerateCallOptions?]>();
    expectTypeOf<Idefics2["generate"]>().returns.resolves.toEqualTypeOf<GenerationResult>();
    expectTypeOf<Idefics2["stream"]>().returns.toEqualTypeOf<GenerationStream>();
    expectTypeOf<GenerationStream>().toMatchTypeOf<AsyncIterable<string>>();
    expectTypeOf<GenerationStream["result"]>().resolves.toEqualTypeOf<GenerationResult>();
  });

  it("type the result as the wire's shape, with a closed set of finish reasons", () => {
    expectTypeOf<GenerationResult["tokenIds"]>().toEqualTypeOf<number[]>();
    expectTypeOf<GenerationResult["finishReason"]>().toEqualTypeOf<"stop" | "length" | "stop_string">();
    expectTypeOf<GenerationResult["usage"]>().toEqualTypeOf<{
      promptTokens: number;
      imageTokens: number;
      completionTokens: number;
      totalTokens: number;
    }>();
  });

  it("refuse option typos and wrong value types at compile time", () => {
    // @ts-expect-error: no such option
    expectTypeOf<GenerateCallOptions>().toMatchTypeOf<{ maxTokens: number }>();
    expectTypeOf<{ quantization: "3bit" }>().not.toMatchTypeOf<LoadOptions>();
    expectTypeOf<{ quantization: "4bit" }>().toMatchTypeOf<LoadOptions>();
  });

  it("give every error a typed code", () => {
    expectTypeOf<Idefics2Error["code"]>().toEqualTypeOf<ErrorCode>();
    expectTypeOf<WorkerCrashedError["code"]>().toEqualTypeOf<"WORKER_CRASHED">();
    expectTypeOf<WorkerCrashedError["exitCode"]>().toEqualTypeOf<number | null>();
  });
});

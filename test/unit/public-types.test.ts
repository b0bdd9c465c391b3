import { describe, expectTypeOf, it } from "vitest";
import { z } from "zod";
import {
  type GenerateCallOptions,
  type GenerationResult,
  type GenerationStream,
  Idefics2,
  type Idefics2Error,
  type ErrorCode,
  type LoadOptions,
  type LoadProgress,
  type LoadStage,
  type Message,
  type ProgressUnit,
  type SetupProgress,
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
    expectTypeOf<GenerationResult["finishReason"]>().toEqualTypeOf<"stop" | "length" | "stop_string" | "incomplete_structure">();
    expectTypeOf<GenerationResult["usage"]>().toEqualTypeOf<{
      promptTokens: number;
      imageTokens: number;
      completionTokens: number;
      totalTokens: number;
    }>();
  });

  it("type a structured answer's object by its schema, choices or regex", () => {
    const Shape = z.object({ colour: z.enum(["red", "blue"]), count: z.number().int().optional() });
    type Generate = (model: Idefics2) => unknown;
    const bySchema = ((model) => model.generate([], { schema: Shape })) satisfies Generate;
    expectTypeOf<Awaited<ReturnType<typeof bySchema>>["object"]>().toEqualTypeOf<{ colour: "red" | "blue"; count?: number | undefined }>();
    const byJsonSchema = ((model) => model.generate([], { schema: { type: "object" } })) satisfies Generate;
    expectTypeOf<Awaited<ReturnType<typeof byJsonSchema>>["object"]>().toEqualTypeOf<unknown>();
    const byChoices = ((model) => model.generate([], { choices: ["red", "green"] })) satisfies Generate;
    expectTypeOf<Awaited<ReturnType<typeof byChoices>>["object"]>().toEqualTypeOf<"red" | "green">();
    const byRegex = ((model) => model.stream([], { regex: "[0-9]+" }).result) satisfies Generate;
    expectTypeOf<Awaited<ReturnType<typeof byRegex>>["object"]>().toEqualTypeOf<string>();
    const plain = ((model) => model.generate([], { maxNewTokens: 3 })) satisfies Generate;
    expectTypeOf<Awaited<ReturnType<typeof plain>>>().toEqualTypeOf<GenerationResult>();
  });

  it("refuse option typos and wrong value types at compile time", () => {
    // @ts-expect-error: no such option
    expectTypeOf<GenerateCallOptions>().toMatchTypeOf<{ maxTokens: number }>();
    expectTypeOf<{ quantization: "3bit" }>().not.toMatchTypeOf<LoadOptions>();
    expectTypeOf<{ quantization: "4bit" }>().toMatchTypeOf<LoadOptions>();
  });

  it("type deviceMap as the device strings, so a made-up device does not compile", () => {
    expectTypeOf<LoadOptions["deviceMap"]>().toEqualTypeOf<"auto" | "cpu" | "cuda" | `cuda:${number}` | undefined>();
    const good: LoadOptions[] = [{ deviceMap: "auto" }, { deviceMap: "cpu" }, { deviceMap: "cuda" }, { deviceMap: "cuda:1" }];
    // @ts-expect-error: not a device
    const gpu: LoadOptions = { deviceMap: "gpu" };
    // @ts-expect-error: a CUDA device is numbered
    const letter: LoadOptions = { deviceMap: "cuda:x" };
    expectTypeOf([...good, gpu, letter]).toEqualTypeOf<LoadOptions[]>();
  });

  it("type progress events as a union told apart by `type`", () => {
    expectTypeOf<LoadProgress["type"]>().toEqualTypeOf<"stage" | "log" | "progress">();
    expectTypeOf<LoadProgress["stage"]>().toEqualTypeOf<LoadStage>();
    expectTypeOf<"pip" | "worker" | "processor" | "model" | "restart">().toMatchTypeOf<LoadStage>();
    expectTypeOf<ProgressUnit>().toEqualTypeOf<"bytes" | "items" | "percent">();
    const onProgress = (event: LoadProgress): string => {
      switch (event.type) {
        case "stage":
          expectTypeOf(event).not.toHaveProperty("done");
          return `${event.stage} started after ${event.elapsedMs} ms: ${event.message}`;
        case "log":
          expectTypeOf(event.message).toEqualTypeOf<string>();
          return event.message;
        case "progress":
          expectTypeOf(event.done).toEqualTypeOf<number>();
          expectTypeOf(event.total).toEqualTypeOf<number | undefined>();
          expectTypeOf(event.unit).toEqualTypeOf<ProgressUnit>();
          return `${event.done}/${event.total ?? "?"} ${event.unit}`;
      }
    };
    expectTypeOf(onProgress).toMatchTypeOf<NonNullable<import("../../src/model.js").LoadCallOptions["onProgress"]>>();
    // What ensurePythonEnvironment reports is one of load()'s events.
    expectTypeOf<SetupProgress>().toMatchTypeOf<LoadProgress>();
    // @ts-expect-error: a log line carries no count
    const counted: LoadProgress = { type: "log", stage: "pip", message: "Collecting torch", elapsedMs: 5, done: 3 };
    // @ts-expect-error: no such stage
    const unknown: LoadProgress = { type: "stage", stage: "compile", message: "Compiling", elapsedMs: 5 };
    expectTypeOf([counted, unknown]).toEqualTypeOf<LoadProgress[]>();
  });

  it("give every error a typed code", () => {
    expectTypeOf<Idefics2Error["code"]>().toEqualTypeOf<ErrorCode>();
    expectTypeOf<WorkerCrashedError["code"]>().toEqualTypeOf<"WORKER_CRASHED">();
    expectTypeOf<WorkerCrashedError["exitCode"]>().toEqualTypeOf<number | null>();
  });
});

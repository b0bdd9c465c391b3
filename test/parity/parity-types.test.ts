import { describe, expectTypeOf, it } from "vitest";
import {
  checkParity,
  type LogitsComparison,
  type ParityOptions,
  type ParityReport,
  type parityJunitXml,
  type ReferenceRunError,
  type Idefics2Error,
  type TokenDifference,
} from "../../src/index.js";

describe("the parity check's public types", () => {
  it("types checkParity's options and report", () => {
    expectTypeOf(checkParity).returns.toEqualTypeOf<Promise<ParityReport>>();
    expectTypeOf<ParityOptions["quantization"]>().toEqualTypeOf<"none" | "8bit" | "4bit" | undefined>();
    expectTypeOf<ParityOptions["decoder"]>().toEqualTypeOf<"auto" | "fast" | "reference" | undefined>();
    expectTypeOf<ParityReport["method"]>().toEqualTypeOf<"token-ids" | "teacher-forced">();
    expectTypeOf<ParityReport["logits"]>().toEqualTypeOf<LogitsComparison | null>();
    expectTypeOf<ParityReport["tokens"]["firstDifference"]>().toEqualTypeOf<TokenDifference | null>();
    expectTypeOf<readonly ParityReport[]>().toExtend<Parameters<typeof parityJunitXml>[0]>();
    expectTypeOf<ReferenceRunError>().toExtend<Idefics2Error>();
    expectTypeOf<ReferenceRunError["code"]>().toEqualTypeOf<"GENERATION_FAILED">();
    // @ts-expect-error messages are required
    const noMessages: ParityOptions = {};
    // @ts-expect-error quantization is one of the three modes
    const badMode: ParityOptions = { messages: [], quantization: "3bit" };
    void [noMessages, badMode];
  });
});

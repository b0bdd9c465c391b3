import { describe, expect, it } from "vitest";
import { compareTokenIds } from "../../src/parity/compare-token-ids.js";
import { judgeTeacherForcing, type TeacherForcedStep } from "../../src/parity/judge-teacher-forcing.js";
import { logitsChecks, tokenCheck, verdictLine } from "../../src/parity/parity-verdict.js";

const run = { model: "embedded tiny-idefics2", quantization: "none", referenceQuantization: "none", decoder: "reference", device: "cpu" };
const step = (overrides: Partial<TeacherForcedStep> = {}): TeacherForcedStep => ({
  referenceTop1: 7,
  referenceMargin: 5,
  fastTop1: 7,
  fastMaxAbsErr: 0.02,
  fastRelErr: 0.001,
  noiseMaxAbsErr: 0.03,
  ...overrides,
});

describe("the verdict line", () => {
  it("says ok with the count of identical tokens and the run", () => {
    const ids = Array.from({ length: 24 }, (_, index) => 100 + index);
    expect(verdictLine([tokenCheck(compareTokenIds(ids, ids))], run)).toBe(
      "parity: ok — 24/24 tokens identical (model embedded tiny-idefics2, quantization none, decoder reference on cpu)",
    );
  });

  it("names the first differing token and both ids when it fails, and a reference quantization that differs", () => {
    const tokens = compareTokenIds([5, 6, 7, 412, 9], [5, 6, 7, 97, 9]);
    expect(verdictLine([tokenCheck(tokens)], { ...run, referenceQuantization: "4bit" })).toBe(
      "parity: FAILED — first difference at token 3 of 5: reference 412, SDK 97 " +
        "(model embedded tiny-idefics2, quantization none, reference quantization 4bit, decoder reference on cpu)",
    );
  });

  it("says which side ended first", () => {
    expect(tokenCheck(compareTokenIds([5, 6], [5])).message).toBe("first difference at token 1 of 2: reference 6, SDK ended");
    expect(tokenCheck(compareTokenIds([5], [5, 6])).message).toBe("first difference at token 1 of 1: reference ended, SDK 6");
  });

  it("explains the SDK's extra stop at <end_of_utterance>", () => {
    expect(tokenCheck(compareTokenIds([5, 861, 9, 9], [5, 861], [861]))).toEqual({
      name: "greedy token ids equal the reference's",
      ok: true,
      message: "2/2 tokens identical, then the SDK stopped at <end_of_utterance> where the reference went on to 4",
    });
  });

  it("gives the teacher-forced figures when they hold", () => {
    const checks = logitsChecks(judgeTeacherForcing([step(), step({ fastMaxAbsErr: 0.0352, noiseMaxAbsErr: 0.0625 })]));
    expect(checks.map((check) => check.ok)).toEqual([true, true]);
    expect(verdictLine(checks, { ...run, decoder: "fast", device: "cuda:0" })).toBe(
      "parity: ok — teacher-forced logits within noise over 2 steps: max |Δ| 0.0352 ≤ 0.0938 = 1.5 × kernel noise 0.0625; " +
        "top-1 agrees on 2/2 decisive steps (model embedded tiny-idefics2, quantization none, decoder fast on cuda:0)",
    );
  });

  it("lists only the failed teacher-forced checks, with small figures in exponent form", () => {
    const judged = judgeTeacherForcing([
      step({ noiseMaxAbsErr: 1.9e-6, fastMaxAbsErr: 3.34e-4 }),
      step({ noiseMaxAbsErr: 1.9e-6, fastMaxAbsErr: 1e-6, referenceTop1: 412, fastTop1: 97 }),
    ]);
    const checks = logitsChecks(judged);
    expect(checks.map((check) => check.ok)).toEqual([false, false]);
    expect(verdictLine(checks, { ...run, decoder: "fast", device: "cuda:0" })).toBe(
      "parity: FAILED — teacher-forced logits differ by 3.34e-4 at step 0, above 2.85e-6 = 1.5 × kernel noise 1.90e-6; " +
        "top-1 differs at decisive step 1: reference 412, SDK 97, 1/2 decisive steps agree " +
        "(model embedded tiny-idefics2, quantization none, decoder fast on cuda:0)",
    );
    const onlyTop1 = logitsChecks(judgeTeacherForcing([step({ referenceTop1: 412, fastTop1: 97 })]));
    expect(verdictLine(onlyTop1, run)).toMatch(/^parity: FAILED — top-1 differs at decisive step 0: reference 412, SDK 97, 0\/1/);
  });

  it("fails a check with nothing to compare", () => {
    const checks = logitsChecks(judgeTeacherForcing([]));
    expect(checks.every((check) => !check.ok)).toBe(true);
    expect(verdictLine(checks, run)).toContain("no steps to compare");
    expect(verdictLine([], run)).toMatch(/^parity: FAILED — nothing was checked/);
  });
});

import { describe, expect, it } from "vitest";
import { compareTokenIds } from "../../src/parity/compare-token-ids.js";

const END_OF_UTTERANCE = 861;
const EOS = 2;

describe("compareTokenIds", () => {
  it.each([
    {
      case: "equal ids",
      reference: [400, 358, 356, 861],
      sdk: [400, 358, 356, 861],
      expected: { ok: true, identical: 4, firstDifference: null, sdkStoppedEarly: false },
    },
    {
      case: "a different token in the middle",
      reference: [400, 358, 412, 861],
      sdk: [400, 358, 97, 861],
      expected: { ok: false, identical: 2, firstDifference: { index: 2, reference: 412, sdk: 97 }, sdkStoppedEarly: false },
    },
    {
      case: "the SDK stopping at <end_of_utterance> where the reference went on",
      reference: [400, 358, 861, 17, 18, 19],
      sdk: [400, 358, 861],
      expected: { ok: true, identical: 3, firstDifference: null, sdkStoppedEarly: true },
    },
    {
      case: "the SDK ending early without a stop token",
      reference: [400, 358, 356, 408],
      sdk: [400, 358],
      expected: { ok: false, identical: 2, firstDifference: { index: 2, reference: 356, sdk: null }, sdkStoppedEarly: false },
    },
    {
      case: "the SDK going on past the reference's end",
      reference: [400, 358],
      sdk: [400, 358, 356],
      expected: { ok: false, identical: 2, firstDifference: { index: 2, reference: null, sdk: 356 }, sdkStoppedEarly: false },
    },
    {
      case: "a stop id the reference did not produce at that position",
      reference: [400, 358, 356],
      sdk: [400, 861],
      expected: { ok: false, identical: 1, firstDifference: { index: 1, reference: 358, sdk: 861 }, sdkStoppedEarly: false },
    },
    {
      case: "both empty",
      reference: [],
      sdk: [],
      expected: { ok: true, identical: 0, firstDifference: null, sdkStoppedEarly: false },
    },
  ])("judges $case", ({ reference, sdk, expected }) => {
    expect(compareTokenIds(reference, sdk, [EOS, END_OF_UTTERANCE])).toEqual({
      referenceTokens: reference.length,
      sdkTokens: sdk.length,
      ...expected,
    });
  });

  it("accepts an early stop only at one of the given stop ids", () => {
    expect(compareTokenIds([400, 861, 17], [400, 861], []).ok).toBe(false);
    expect(compareTokenIds([400, 861, 17], [400, 861], [861]).ok).toBe(true);
  });
});

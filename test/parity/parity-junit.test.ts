import { describe, expect, it } from "vitest";
import { compareTokenIds } from "../../src/parity/compare-token-ids.js";
import { attribute, parityJunitXml, text } from "../../src/parity/parity-junit.js";
import type { ParityReport } from "../../src/parity/parity-report.js";
import { tokenCheck, verdictLine } from "../../src/parity/parity-verdict.js";

function report(name: string, reference: number[], sdk: number[]): ParityReport {
  const tokens = compareTokenIds(reference, sdk);
  const checks = [tokenCheck(tokens)];
  const context = { model: "m", quantization: "none", referenceQuantization: "none", decoder: "reference", device: "cpu" };
  return {
    ok: tokens.ok,
    verdict: verdictLine(checks, context),
    name,
    model: "/models/a&b <tiny>",
    quantization: "none",
    referenceQuantization: "none",
    decoder: "reference",
    device: "cpu",
    method: "token-ids",
    maxNewTokens: 24,
    reference: { tokenIds: reference, text: "" },
    sdk: { tokenIds: sdk, text: "", finishReason: "stop" },
    tokens,
    logits: null,
    checks,
    timings: { sdkMs: 1200, referenceMs: 4800, teacherForcingMs: null, totalMs: 6000 },
    finishedAt: "2026-11-30T12:00:00.123Z",
  };
}

// Attribute values of every element with this tag, in order (enough XML for these tests).
function attributesOf(xml: string, tag: string): Record<string, string>[] {
  return [...xml.matchAll(new RegExp(`<${tag}\\b([^>]*)>`, "g"))].map((match) =>
    Object.fromEntries([...(match[1] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map(([, key, value]) => [key, value])),
  );
}

describe("parityJunitXml", () => {
  it("writes one testsuite per conversation and one testcase per check, with totals", () => {
    const xml = parityJunitXml([report("demo", [1, 2, 3], [1, 2, 3]), report("drift", [1, 2, 3], [1, 9, 3])]);
    expect(xml.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites ')).toBe(true);
    expect(attributesOf(xml, "testsuites")).toEqual([{ name: "idefics2 parity", tests: "2", failures: "1", errors: "0", time: "12.000" }]);
    expect(attributesOf(xml, "testsuite").map((suite) => [suite.name, suite.tests, suite.failures, suite.timestamp])).toEqual([
      ["demo", "1", "0", "2026-11-30T12:00:00"],
      ["drift", "1", "1", "2026-11-30T12:00:00"],
    ]);
    expect(attributesOf(xml, "testcase").map((testcase) => testcase.classname)).toEqual(["idefics2.parity.demo", "idefics2.parity.drift"]);
    expect(attributesOf(xml, "failure")).toEqual([
      { message: "first difference at token 1 of 3: reference 2, SDK 9", type: "ParityMismatch" },
    ]);
    expect(xml).toContain("reference token ids: 1 2 3\nSDK token ids:       1 9 3</failure>");
    expect(xml.match(/<testcase /g)).toHaveLength(2);
    expect(xml.match(/<\/testsuite>/g)).toHaveLength(2);
    expect(xml.endsWith("</testsuites>\n")).toBe(true);
  });

  it("escapes names, properties and messages", () => {
    const xml = parityJunitXml([report(`a "quoted" <name> & 'more'`, [1], [2])]);
    expect(xml).toContain('<testsuite name="a &quot;quoted&quot; &lt;name&gt; &amp; &apos;more&apos;"');
    expect(xml).toContain('<property name="model" value="/models/a&amp;b &lt;tiny&gt;"/>');
    expect(xml).toContain('classname="idefics2.parity.a_quoted_name_more_"');
    expect(xml).not.toMatch(/<name>|a&b/);
  });

  it("writes an error element when the check could not run", () => {
    const xml = parityJunitXml([
      {
        name: "demo",
        error: { name: "ReferenceRunError", code: "GENERATION_FAILED", message: "exited with code 1: <boom>", fix: "Run it by hand" },
        finishedAt: "2026-11-30T12:00:00Z",
      },
    ]);
    expect(attributesOf(xml, "testsuites")[0]).toMatchObject({ tests: "1", failures: "0", errors: "1" });
    expect(attributesOf(xml, "error")).toEqual([
      { message: "exited with code 1: &lt;boom&gt; — Run it by hand", type: "ReferenceRunError GENERATION_FAILED" },
    ]);
    expect(xml).not.toContain("<failure");
  });
});

describe("XML escaping", () => {
  it.each([
    ["plain", "plain", "plain"],
    ["a & b < c > d", "a &amp; b &lt; c &gt; d", "a &amp; b &lt; c &gt; d"],
    [`"double" 'single'`, `"double" 'single'`, "&quot;double&quot; &apos;single&apos;"],
    ["line\nbreak\ttab\rreturn", "line\nbreak\ttab\rreturn", "line&#10;break&#9;tab&#13;return"],
    ["nul\u0000 bell\u0007 esc\u001b", "nul\uFFFD bell\uFFFD esc\uFFFD", "nul\uFFFD bell\uFFFD esc\uFFFD"],
    ["lone \uD800 surrogate, pair \uD83D\uDE00", "lone \uFFFD surrogate, pair \uD83D\uDE00", "lone \uFFFD surrogate, pair \uD83D\uDE00"],
    ["]]> & &amp;", "]]&gt; &amp; &amp;amp;", "]]&gt; &amp; &amp;amp;"],
  ])("escapes %j", (value, asText, asAttribute) => {
    expect(text(value)).toBe(asText);
    expect(attribute(value)).toBe(asAttribute);
  });
});

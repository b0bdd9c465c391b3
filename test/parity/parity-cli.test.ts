import { cp, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { beforeAll, describe, expect, it } from "vitest";
import { embeddedModelPath } from "../../src/embedded-model.js";
import { InvalidInputError } from "../../src/errors.js";
import { assistant, image, user } from "../../src/messages.js";
import { checkParity } from "../../src/parity/check-parity.js";
import type { ParityReport } from "../../src/parity/parity-report.js";
import { demoFirst, demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { repoRoot } from "../helpers/reference.js";

// The CLI as a CI job runs it: the built entry point through node, with the suite's interpreter.
function idefics2(args: string[]) {
  return execa(process.execPath, [join(repoRoot, "dist", "cli", "main.js"), ...args], {
    reject: false,
    env: { IDEFICS2_PYTHON: testPython() },
    timeout: 240_000,
  });
}

// Parses the JUnit file with Python's own XML parser (a real well-formedness check) and summarises it.
async function junitSummary(file: string) {
  const script = [
    "import json, sys, xml.etree.ElementTree as ET",
    "root = ET.parse(sys.argv[1]).getroot()",
    "cases = root.findall('./testsuite/testcase')",
    "print(json.dumps({'root': root.tag, 'attributes': root.attrib, 'suites': [s.attrib['name'] for s in root.findall('testsuite')],",
    "  'cases': [c.attrib['name'] for c in cases], 'failures': [f.attrib['message'] for f in root.iter('failure')],",
    "  'errors': len(list(root.iter('error')))}))",
  ].join("\n");
  const { stdout } = await execa(testPython(), ["-c", script, file]);
  return JSON.parse(stdout) as {
    root: string;
    attributes: Record<string, string>;
    suites: string[];
    cases: string[];
    failures: string[];
    errors: number;
  };
}

let folder = "";
beforeAll(async () => {
  folder = await mkdtemp(join(tmpdir(), "idefics2-parity-test-"));
});

// The embedded model's architecture, tokenizer and processor with random weights (seed 0), saved as a model folder.
async function randomWeightsModel(): Promise<string> {
  const target = join(folder, "random-weights");
  await cp(embeddedModelPath, target, { recursive: true });
  const script = [
    "import sys, torch",
    "from transformers import AutoConfig, AutoModelForImageTextToText",
    "torch.manual_seed(0)",
    "AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(sys.argv[1])).save_pretrained(sys.argv[1])",
  ].join("\n");
  await execa(testPython(), ["-c", script, target]);
  return target;
}

describe("idefics2 parity on the embedded model (CPU)", () => {
  it("holds on the demo conversation: exit 0, the JSON report, and a JUnit file without failures", async () => {
    const junit = join(folder, "pass.xml");
    const result = await idefics2(["parity", "--json", "--junit", junit, "--max-new-tokens", "24"]);
    expect(result.stderr).not.toContain("Traceback");
    expect(result.exitCode).toBe(0);
    const report = JSON.parse(result.stdout) as ParityReport;
    expect(report).toMatchObject({
      ok: true,
      name: "demo conversation",
      model: embeddedModelPath,
      quantization: "none",
      referenceQuantization: "none",
      decoder: "reference",
      device: "cpu",
      method: "token-ids",
      maxNewTokens: 24,
      logits: null,
      tokens: { ok: true, firstDifference: null },
      checks: [{ name: "greedy token ids equal the reference's", ok: true }],
    });
    expect(report.reference.tokenIds.length).toBeGreaterThan(0);
    expect(report.sdk.tokenIds).toEqual(report.reference.tokenIds);
    expect(report.sdk.text.toLowerCase()).toContain("blue");
    const count = report.reference.tokenIds.length;
    expect(report.verdict).toBe(
      `parity: ok — ${count}/${count} tokens identical (model embedded tiny-idefics2, quantization none, decoder reference on cpu)`,
    );
    expect(report.timings.referenceMs).toBeGreaterThan(0);

    const summary = await junitSummary(junit);
    expect(summary).toEqual({
      root: "testsuites",
      attributes: expect.objectContaining({ tests: "1", failures: "0", errors: "0" }),
      suites: ["demo conversation"],
      cases: ["greedy token ids equal the reference's"],
      failures: [],
      errors: 0,
    });
    expect(await readFile(junit, "utf8")).not.toContain("<failure");
  });

  it("catches drift: a reference at 4-bit against the SDK at none fails with the first differing token", async () => {
    // The embedded model is trained: its greedy answers survive 4-bit rounding on some CPUs (an AMD EPYC with AVX2
    // gave "That is a square." either way), so the drift is made certain with the same architecture's random
    // weights, whose first step's top two are 0.05-0.17 apart in logits under either quantization, far above any
    // CPU's rounding.
    const random = await randomWeightsModel();
    const junit = join(folder, "fail.xml");
    const result = await idefics2([
      "parity",
      "--model",
      random,
      "--prompt",
      "Hello! What can you tell me about New York?",
      "--reference-quantization",
      "4bit",
      "--max-new-tokens",
      "24",
      "--junit",
      junit,
    ]);
    expect(result.stderr).not.toContain("Traceback");
    expect(result.exitCode).toBe(1);
    const lines = result.stdout.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^parity: FAILED — first difference at token \d+ of \d+: reference \d+, SDK \d+ \(model .+, quantization none, reference quantization 4bit, decoder reference on cpu\)$/,
    );
    const summary = await junitSummary(junit);
    expect(summary.attributes).toMatchObject({ tests: "1", failures: "1", errors: "0" });
    expect(summary.cases).toEqual(["greedy token ids equal the reference's"]);
    expect(summary.failures).toHaveLength(1);
    expect(summary.failures[0]).toMatch(/^first difference at token \d+ of \d+: reference \d+, SDK \d+$/);
    expect(await readFile(junit, "utf8")).toMatch(/reference token ids: [\d ]+\nSDK token ids: +[\d ]+<\/failure>/);
  });

  it("refuses a bad command line with exit code 2 and bad values with a typed one-line error", async () => {
    const stray = await idefics2(["parity", "--image", demoFirst]);
    expect(stray.exitCode).toBe(2);
    expect(stray.stderr).toContain("--image needs --messages FILE.json or --prompt TEXT");
    expect(stray.stderr).toContain("Run `idefics2 parity --help` for usage.");
    expect((await idefics2(["parity", "--frobnicate"])).exitCode).toBe(2);
    const badMode = await idefics2(["parity", "--quantization", "3bit"]);
    expect(badMode.exitCode).toBe(1);
    expect(badMode.stderr).toMatch(/error \[INVALID_OPTIONS\]: .*--quantization.*"8bit".*"4bit".*"3bit"/);
    const messages = join(folder, "two-images.json");
    await writeFile(messages, JSON.stringify([user(image(), image(), "Which is bigger?")]));
    const tooFew = await idefics2(["parity", "--messages", messages, "--image", demoFirst, "--junit", join(folder, "error.xml")]);
    expect(tooFew.exitCode).toBe(1);
    expect(tooFew.stderr).toContain("error [INVALID_MESSAGES]: The messages have 2 image parts but 1 image was given");
    expect((await junitSummary(join(folder, "error.xml"))).errors).toBe(1);
    const help = await idefics2(["parity", "--help"]);
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toContain("--junit FILE");
  });
});

describe("checkParity", () => {
  it("runs the fast decoder's teacher-forced check end to end (on the CPU: the plumbing of the GPU method)", async () => {
    const report = await checkParity({
      messages: [user(image(), "What colour is the shape?")],
      images: [demoFirst],
      decoder: "fast",
      method: "teacher-forced",
      maxNewTokens: 12,
      python: testPython(),
      name: "fast decoder",
    });
    expect(report).toMatchObject({ decoder: "fast", device: "cpu", method: "teacher-forced", name: "fast decoder" });
    expect(report.checks.map((check) => check.name)).toEqual([
      "teacher-forced logits within kernel noise",
      "top-1 agreement on decisive steps",
    ]);
    const logits = report.logits;
    expect(logits).not.toBeNull();
    expect(logits?.steps).toBe(report.reference.tokenIds.length);
    expect(logits?.finite).toBe(true);
    expect(logits?.decisiveSteps).toBeGreaterThan(0);
    expect(logits?.decisiveAgreements).toBe(logits?.decisiveSteps);
    // On the CPU the fast step runs eagerly in float32: within 1e-4 of generate()'s logits (python/tests/decode), though
    // the two attention kernels differ by only a few float32 steps there, so `ok` is not asserted on this machine.
    expect(logits?.maxAbsErr).toBeLessThan(1e-4);
    expect(report.timings.teacherForcingMs).toBeGreaterThan(0);
    expect(report.tokens.ok).toBe(true);
  });

  it("holds with pictures as data URLs (a URL object and a string), which reach the reference program as files", async () => {
    const dataUrl = async (path: string, mediaType: string) => `data:${mediaType};base64,${(await readFile(path)).toString("base64")}`;
    const report = await checkParity({
      messages: [
        user(image(new URL(await dataUrl(demoFirst, "image/png"))), "What do we see?"),
        assistant("A red circle."),
        user(image(await dataUrl(demoSecond, "image/jpeg")), "And here?"),
      ],
      maxNewTokens: 12,
      python: testPython(),
    });
    expect(report.ok, report.verdict).toBe(true);
    expect(report.reference.tokenIds.length).toBeGreaterThan(0);
  });

  it("refuses pictures given as bytes, which the reference program cannot read, before loading anything", async () => {
    const bytes = await readFile(demoFirst);
    const started = Date.now();
    await expect(checkParity({ messages: [user(image(bytes), "What is it?")], python: testPython() })).rejects.toThrow(InvalidInputError);
    await expect(checkParity({ messages: [user(image(bytes), "What is it?")], python: testPython() })).rejects.toMatchObject({
      code: "INVALID_MESSAGES",
      fix: expect.stringContaining("Save the picture to a file"),
    });
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});

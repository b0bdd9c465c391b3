import { writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { demoAssetsPath, embeddedModelPath } from "../../src/embedded-model.js";
import { demoFirst, demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { repoRoot, runReference } from "../helpers/reference.js";

const conversation = join(demoAssetsPath, "conversation.json");

// The CLI as a user runs it: the built entry point through node, with the suite's interpreter.
function idefics2(args: string[]) {
  return execa(process.execPath, [join(repoRoot, "dist", "cli", "main.js"), ...args], {
    reject: false,
    env: { IDEFICS2_PYTHON: testPython() },
    timeout: 240_000,
  });
}

describe("idefics2 generate --json", () => {
  it.each(["none", "8bit", "4bit"] as const)(
    "gives the reference's token ids on the blog conversation with quantization %s",
    async (quantization) => {
      const [cli, reference] = await Promise.all([
        idefics2([
          "generate",
          "--messages",
          conversation,
          "--image",
          demoFirst,
          "--image",
          demoSecond,
          "--quantization",
          quantization,
          "--max-new-tokens",
          "40",
          "--json",
        ]),
        runReference({
          model: embeddedModelPath,
          messages: JSON.parse(await import("node:fs").then((fs) => fs.readFileSync(conversation, "utf8"))),
          images: [demoFirst, demoSecond],
          quantization,
          maxNewTokens: 40,
        }),
      ]);
      expect(cli.stderr).not.toContain("Traceback");
      expect(cli.exitCode).toBe(0);
      const output = JSON.parse(cli.stdout);
      expect(Object.keys(output)).toEqual(["text", "tokenIds", "finishReason", "usage", "timings"]);
      expect(output.tokenIds).toEqual(reference.tokenIds);
      expect(output.text).toBe(reference.text);
    },
  );

  it("streams plain text without --json, with --prompt putting every image first", async () => {
    const result = await idefics2(["generate", "--prompt", "What colour is the shape?", "--image", demoSecond, "--max-new-tokens", "20"]);
    expect(result.exitCode).toBe(0);
    expect(result.stdout.toLowerCase()).toContain("blue");
  });
});

describe("idefics2 demo", () => {
  it("answers the blog-shaped conversation with the second picture's colour", async () => {
    const result = await idefics2(["demo"]);
    expect(result.exitCode).toBe(0);
    const answer = result.stdout.split("\n").find((line) => line.startsWith("Assistant:") && !line.includes("red circle"));
    expect(answer?.toLowerCase()).toContain("blue");
  });
});

describe("idefics2 on bad input", () => {
  const cases: [string, () => Promise<string[]>, RegExp][] = [
    [
      "a missing image file",
      async () => ["generate", "--prompt", "What?", "--image", "/no/such/file.jpg"],
      /IMAGE_UNREADABLE.*no such file/,
    ],
    [
      "a corrupt image",
      async () => {
        const path = join(tmpdir(), "idefics2-cli-corrupt.png");
        await writeFile(path, Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(40, 7)]));
        return ["generate", "--prompt", "What?", "--image", path];
      },
      /IMAGE_UNREADABLE/,
    ],
    [
      "more image parts than images",
      async () => ["generate", "--messages", conversation, "--image", demoFirst],
      /INVALID_MESSAGES.*2 image parts but 1 image was given/,
    ],
    ["an unknown quantization", async () => ["generate", "--prompt", "Hi", "--quantization", "3bit"], /INVALID_OPTIONS.*quantization/],
    [
      "a non-numeric token count",
      async () => ["generate", "--prompt", "Hi", "--max-new-tokens", "many"],
      /INVALID_OPTIONS.*--max-new-tokens expects a number/,
    ],
    ["a negative token count", async () => ["generate", "--prompt", "Hi", "--max-new-tokens=-5"], /INVALID_OPTIONS.*maxNewTokens/],
    ["an unknown flag", async () => ["generate", "--prompt", "Hi", "--temprature", "1"], /Unknown option '--temprature'/],
    ["a missing messages file", async () => ["generate", "--messages", "/no/such/messages.json"], /INVALID_MESSAGES.*ENOENT/],
  ];

  it.each(cases)("exits non-zero within seconds with one clear line for %s", async (_name, args, pattern) => {
    const started = Date.now();
    const result = await idefics2(await args());
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toMatch(pattern);
    expect(result.stderr).not.toContain("Traceback");
    expect(result.stderr.trim().split("\n").length).toBeLessThanOrEqual(2);
  });

  it("exits non-zero with one line when the model folder does not exist", async () => {
    const result = await idefics2(["generate", "--model", "/no/such/model", "--prompt", "Hi"]);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(/MODEL_NOT_FOUND/);
    expect(result.stderr).not.toContain("Traceback");
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });
});

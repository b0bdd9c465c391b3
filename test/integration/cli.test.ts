import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { demoAssetsPath, embeddedModelPath } from "../../src/embedded-model.js";
import { demoFirst, demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { repoRoot, runReference } from "../helpers/reference.js";

const conversation = join(demoAssetsPath, "conversation.json");

// The CLI as a user runs it: the built entry point through node, with the suite's interpreter.
function idefics2(args: string[], env: Record<string, string> = { IDEFICS2_PYTHON: testPython() }) {
  return execa(process.execPath, [join(repoRoot, "dist", "cli", "main.js"), ...args], {
    reject: false,
    env,
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

// What a person or a script hands the CLI: a question for its version and usage, the prompt or the messages on
// stdin, a picture as a data URL. Each gives what the plain form gives, and long input never makes a long error line.
describe("idefics2 --version, usage, stdin and data: URLs", () => {
  const main = join(repoRoot, "dist", "cli", "main.js");
  const env = () => ({ IDEFICS2_PYTHON: testPython() });
  const withStdin = (args: string[], stdin: { input: string } | { inputFile: string }) =>
    execa(process.execPath, [main, ...args], { reject: false, env: env(), timeout: 240_000, ...stdin });
  const json = (result: { exitCode?: number; stdout: string; stderr: string }) => {
    expect(result.exitCode, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as { text: string; tokenIds: number[] };
  };

  it("prints the package's version for --version and -v", async () => {
    const { version } = JSON.parse(await readFile(join(repoRoot, "package.json"), "utf8")) as { version: string };
    for (const flag of ["--version", "-v"]) {
      const result = await idefics2([flag]);
      expect(result.exitCode).toBe(0);
      expect(result.stdout).toBe(version);
    }
  });

  it("says --model is optional everywhere generate is described, and lists chat", async () => {
    const usage = (await idefics2(["--help"])).stdout;
    expect(usage).toContain("generate [--model DIR_OR_ID] (--messages FILE.json | --prompt TEXT)");
    expect(usage).toMatch(/--model defaults to the embedded tiny model/);
    expect(usage).toContain("chat [--model DIR_OR_ID] [--image PATH_OR_URL]... [options]");
    expect(usage).toMatch(/--version, -v/);
    const generateUsage = (await idefics2(["generate", "--help"])).stdout;
    expect(generateUsage).toMatch(/^Usage: idefics2 generate \[--model DIR_OR_ID\]/);
    expect(generateUsage).toMatch(/--model DIR_OR_ID .*default: the embedded tiny model/);
    expect(generateUsage).toContain("`--prompt -` reads all of stdin");
    const readme = await readFile(join(repoRoot, "README.md"), "utf8");
    expect(readme).toContain("`--model` defaults to the embedded model");
    expect(readme).not.toMatch(/generate --model DIR_OR_ID/);
  });

  it("answers `--prompt -` from a pipe, `--messages -` from a file and a data: URL as their plain forms", async () => {
    const question = ["--max-new-tokens", "20", "--json"];
    const jpeg = `data:image/jpeg;base64,${(await readFile(demoSecond)).toString("base64")}`;
    const [plain, piped, fromData, messagesFile, messagesStdin] = await Promise.all([
      idefics2(["generate", "--image", demoSecond, "--prompt", "What colour?", ...question]),
      // Literally `echo "What colour?" | idefics2 generate --image second.jpg --prompt -`.
      execa(
        "sh",
        [
          "-c",
          'echo "What colour?" | "$0" "$1" generate --image "$2" --prompt - "$3" "$4" "$5"',
          process.execPath,
          main,
          demoSecond,
          ...question,
        ],
        {
          reject: false,
          env: env(),
          timeout: 240_000,
        },
      ),
      idefics2(["generate", "--image", jpeg, "--prompt", "What colour?", ...question]),
      idefics2(["generate", "--messages", conversation, "--image", demoFirst, "--image", demoSecond, ...question]),
      withStdin(["generate", "--messages", "-", "--image", demoFirst, "--image", demoSecond, ...question], { inputFile: conversation }),
    ]);
    const expected = json(plain);
    expect(expected.tokenIds.length).toBeGreaterThan(0);
    expect(json(piped)).toEqual(expect.objectContaining({ text: expected.text, tokenIds: expected.tokenIds }));
    expect(json(fromData)).toEqual(expect.objectContaining({ text: expected.text, tokenIds: expected.tokenIds }));
    const fromFile = json(messagesFile);
    expect(json(messagesStdin)).toEqual(expect.objectContaining({ text: fromFile.text, tokenIds: fromFile.tokenIds }));
  });

  it.each([
    ["nothing", "", /INVALID_MESSAGES.*--prompt - read nothing from stdin/],
    ["only whitespace", " \n\t\n", /INVALID_MESSAGES.*--prompt - read only whitespace from stdin/],
    ["more than 16 MiB", "a".repeat(17 * 1024 * 1024), /INVALID_MESSAGES.*--prompt - read more than 16777216 bytes from stdin/],
  ])("refuses a stdin holding %s within seconds, with one line", async (_what, input, pattern) => {
    const started = Date.now();
    const result = await withStdin(["generate", "--prompt", "-"], { input });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(pattern);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("quotes only a short prefix of a 100 kB argument in its one error line", async () => {
    const long = "x".repeat(100_000);
    const garbage = `data:image/png;base64,${Buffer.alloc(75_000, 7).toString("base64")}`;
    const cases: [string[], RegExp][] = [
      [["generate", "--prompt", "Hi", "--image", garbage], /IMAGE_UNREADABLE.*data:image\/png;base64,BwcHBwcHB… \(100,022 characters\)/],
      [["generate", "--prompt", "Hi", "--image", `/no/such/${long}.png`], /IMAGE_UNREADABLE.*\/no\/such\/xxx+… \(100,013 characters\)/],
      [["generate", "--messages", `/no/such/${long}.json`], /INVALID_MESSAGES.*--messages \/no\/such\/xxx+… \(100,014 characters\)/],
      [
        ["generate", "--prompt", "Hi", "--max-new-tokens", long],
        /INVALID_OPTIONS.*--max-new-tokens expects a number, got "xxx+… \(100,002 characters\)/,
      ],
      [["generate", "--prompt", "Hi", `--${long}`, "1"], /Unknown option '--xxx+… \(100,002 characters\)'/],
      [[long], /unknown command "xxx+… \(100,000 characters\)"/],
    ];
    for (const [args, pattern] of cases) {
      const result = await idefics2(args);
      expect(result.exitCode, args[args.length - 1]?.slice(0, 40)).not.toBe(0);
      expect(result.stderr).toMatch(pattern);
      expect(result.stderr.length, result.stderr.slice(0, 300)).toBeLessThan(700);
    }
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

  // Error lines quote what was given (a key, a value, a path, a flag); none may forge a second line, whatever it holds.
  const LINE_BREAKS = /\r\n|[\r\n\v\f\u0085\u2028\u2029]/;
  // Checked on each line the output's own newlines end.
  const RAW_CONTROL = /[\p{Cc}\u2028\u2029\u202a-\u202e\u2066-\u2069]/u;
  const FORGED = "idefics2: error [FORGED]: all is well";
  const breaks = ["\n", "\r", "\r\n", "\u001b[2K\r", "\u001b]0;title\u0007", "\u2028", "\u2029", "\u0085", "\u000b", "\u000c", "\u202e"];
  const lines = (stderr: string) => stderr.replace(/\n$/, "").split(LINE_BREAKS);
  // Once a load has begun, the progress display's plain lines (stderr is no terminal here) come before the error's.
  const PROGRESS_LINE = /^\[ *\d+(\.\d)? (ms|s)\] [a-z-]+ /;
  const errorLines = (stderr: string) => lines(stderr).filter((line) => !PROGRESS_LINE.test(line));
  const messagesFile = async (name: string, messages: unknown) => {
    const path = join(tmpdir(), `idefics2-cli-${name}.json`);
    await writeFile(path, JSON.stringify(messages));
    return path;
  };

  it.each(breaks.map((text) => [JSON.stringify(text), text]))(
    "prints exactly one escaped line for an input holding %s (a messages key, a role, a path, a number, a flag)",
    async (_shown, text) => {
      const turn = { role: "user", content: [{ type: "text", text: "Hi" }] };
      const inputs = [
        ["generate", "--messages", await messagesFile("key", [{ ...turn, [`key${text}${FORGED}`]: 1 }])],
        ["generate", "--messages", await messagesFile("role", [{ ...turn, role: `user${text}${FORGED}` }])],
        ["generate", "--messages", `/no/such/dir${text}${FORGED}.json`],
        ["generate", "--prompt", "Hi", "--max-new-tokens", `5${text}${FORGED}`],
        ["generate", "--prompt", "Hi", `--temp${text}${FORGED}`, "1"],
        [`gen${text}${FORGED}`],
      ];
      for (const args of inputs) {
        const result = await idefics2(args);
        expect(result.exitCode, args.join(" ")).not.toBe(0);
        const shown = lines(result.stderr);
        // An error is one line; a usage error is its line and the pointer to --help.
        expect(shown, result.stderr).toHaveLength(result.exitCode === 2 ? 2 : 1);
        expect(shown[0]).toMatch(/^idefics2: /);
        for (const line of result.stderr.replace(/\n$/, "").split("\n")) expect(line).not.toMatch(RAW_CONTROL);
        // What was there is shown escaped.
        expect(result.stderr).toMatch(/\\([bfnrt]|u[0-9a-f]{4})/);
      }
    },
  );

  it("prints one line for a lone surrogate or thousands of unknown keys in a messages file", async () => {
    const lone = await messagesFile("lone", []);
    await writeFile(lone, '[{"role": "user", "content": [{"type": "text", "text": "bad \\ud800 text"}]}]');
    const keys = Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`key${i}\n${FORGED}`, i]));
    const many = await messagesFile("many", [{ role: "user", content: [{ type: "text", text: "Hi" }], ...keys }]);
    for (const [file, pattern] of [
      [lone, /INVALID_MESSAGES.*`0\.content\.0\.text`: must be well-formed Unicode/],
      [many, /INVALID_MESSAGES.*unknown keys .* and 4995 more/],
    ] as const) {
      const result = await idefics2(["generate", "--messages", file]);
      expect(result.exitCode).toBe(1);
      expect(lines(result.stderr)).toHaveLength(1);
      expect(result.stderr).toMatch(pattern);
      expect(result.stderr.length).toBeLessThan(1200);
    }
  });

  it.each(["\n", "\u2028"])("prints one line when the worker's own error quotes a model path holding %j", async (text) => {
    const result = await idefics2(["generate", "--model", `/no/such/model${text}${FORGED}`, "--prompt", "Hi"]);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(/MODEL_NOT_FOUND/);
    expect(errorLines(result.stderr)).toHaveLength(1);
    for (const line of result.stderr.replace(/\n$/, "").split("\n")) expect(line).not.toMatch(RAW_CONTROL);
  });

  it("keeps the doctor's report to its own lines when the interpreter path holds a line break", async () => {
    const result = await idefics2(["doctor", "--python", `/no/such/python\n✗ [FORGED] all is well\r\u2028${FORGED}`]);
    expect(result.exitCode).toBe(1);
    const shown = result.stdout.split(LINE_BREAKS);
    expect(shown.some((line) => line.startsWith("✗ [FORGED]") || line.startsWith("idefics2: error [FORGED]"))).toBe(false);
    expect(shown.filter((line) => line.startsWith("✗ [PYTHON_NOT_FOUND]"))).toHaveLength(1);
  });

  it("exits non-zero with one line when the model folder does not exist", async () => {
    const result = await idefics2(["generate", "--model", "/no/such/model", "--prompt", "Hi"]);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(/MODEL_NOT_FOUND/);
    expect(result.stderr).not.toContain("Traceback");
    expect(errorLines(result.stderr)).toHaveLength(1);
  });
});

describe("idefics2 doctor and setup on a damaged managed environment", () => {
  // A copy of the suite's managed environment made of hard links (instant, no space): deleting in the copy unlinks
  // only the copy's names, and pip writes new files rather than into old ones, so the original stays as it is.
  const envDir = dirname(dirname(testPython()));
  const managed = existsSync(join(envDir, "ready.json"));

  it.runIf(managed)(
    "the doctor names a deleted package folder, a deleted file and an uninstalled requirement; setup reinstalls them; generate answers",
    async () => {
      const home = await mkdtemp(join(tmpdir(), "idefics2-damaged-home-"));
      try {
        const copy = join(home, "envs", basename(envDir));
        await mkdir(dirname(copy), { recursive: true });
        await execa("cp", ["-al", envDir, copy]);
        const [lib] = await readdir(join(copy, "lib"));
        const site = join(copy, "lib", lib as string, "site-packages");
        const tokenizers = (await readdir(site)).find((name) => /^tokenizers-.*\.dist-info$/.test(name)) as string;
        await rm(join(site, "transformers"), { recursive: true });
        await rm(join(site, "PIL", "ImageOps.py"));
        await rm(join(site, tokenizers), { recursive: true });
        // The managed environment, not the suite's interpreter as it is.
        const env = { IDEFICS2_HOME: home, IDEFICS2_PYTHON: "" };

        const damaged = await idefics2(["doctor"], env);
        expect(damaged.exitCode).toBe(1);
        const problem = damaged.stdout.split("\n").find((line) => line.startsWith("✗ [MISSING_PYTHON_PACKAGE]")) ?? "";
        expect(problem).toContain("transformers 5.17.0 (its module transformers cannot be found)");
        expect(problem).toContain("pillow 13.0.0 (its file PIL/ImageOps.py is missing)");
        expect(problem).toContain("tokenizers (not installed, but transformers requires it)");
        expect(damaged.stdout).toMatch(/fix: Run `idefics2 setup`/);

        const setup = await idefics2(["setup"], env);
        expect(setup.exitCode, setup.stderr).toBe(0);
        expect(setup.stderr).toMatch(/\] pip +Repairing /);
        expect(setup.stderr).not.toMatch(/\] venv /);
        expect(setup.stdout.trim()).toBe(join(copy, "bin", "python"));

        const repaired = await idefics2(["doctor", "--json"], env);
        expect(JSON.parse(repaired.stdout)).toMatchObject({ ok: true, source: "managed" });
        const answer = await idefics2(
          ["generate", "--prompt", "What colour is the shape?", "--image", demoSecond, "--max-new-tokens", "12"],
          env,
        );
        expect(answer.stdout.toLowerCase()).toContain("blue");
        // The suite's own environment is untouched.
        expect(existsSync(join(envDir, "lib", lib as string, "site-packages", "PIL", "ImageOps.py"))).toBe(true);
        expect(existsSync(join(envDir, "lib", lib as string, "site-packages", tokenizers))).toBe(true);
      } finally {
        await rm(home, { recursive: true, force: true });
      }
    },
    300_000,
  );

  it.each([
    ["inside /proc", "/proc/idefics2-home"],
    ["below a regular file", join(repoRoot, "package.json", "home")],
  ])("a home folder %s that cannot be written is one ENV_SETUP_FAILED line naming it", async (_what, home) => {
    const result = await idefics2(["setup", "--home", home], { IDEFICS2_PYTHON: "" });
    expect(result.exitCode).toBe(1);
    expect(result.stderr.trim().split("\n").at(-1)).toMatch(
      new RegExp(
        `^idefics2: error \\[ENV_SETUP_FAILED\\]: Cannot write the managed environment under ${home.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: E[A-Z]+ at .* — Make that folder writable`,
      ),
    );
    expect(result.stderr).not.toMatch(/unexpected error/);
  });
});

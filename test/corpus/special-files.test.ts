import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImageError } from "../../src/errors.js";
import { image, user } from "../../src/messages.js";
import { Idefics2 } from "../../src/model.js";
import { demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { repoRoot } from "../helpers/reference.js";
import { colourQuestion, expectRefusal, expectServes } from "./corpus-helpers.js";

// Issue 12, finding 5: a picture path or a messages file that is a FIFO, a device, a socket or a folder is refused
// from `stat` within a bound, never opened, and the model (and every call behind it) keeps serving. The CLI too.

// The bound a refusal must meet, in the library; the CLI adds a Node start on two busy cores.
const REFUSED_WITHIN_MS = 2000;
const CLI_WITHIN_MS = 8000;

let model: Idefics2;
let folder: string;
let socketServer: Server;
const path = (name: string) => join(folder, name);
const ask =
  (...sources: string[]) =>
  () =>
    model.generate([user(...sources.map((source) => image(source)), colourQuestion)], { maxNewTokens: 8 });

beforeAll(async () => {
  folder = await mkdtemp(join(tmpdir(), "idefics2-corpus-special-"));
  for (let index = 0; index < 6; index += 1) await execa("mkfifo", [path(`fifo-${index}.png`)]);
  await execa("mkfifo", [path("messages.json")]);
  await writeFile(path("conversation.json"), JSON.stringify([user(image(), colourQuestion)]));
  socketServer = createServer();
  await new Promise<void>((resolve) => socketServer.listen(path("socket.png"), resolve));
  model = await Idefics2.load({ python: testPython() });
});

afterAll(async () => {
  await model?.close();
  await new Promise((resolve) => socketServer?.close(resolve));
  await rm(folder, { recursive: true, force: true });
});

describe("picture paths that are not regular files", () => {
  it.each([
    ["a FIFO", () => path("fifo-0.png"), /^Cannot read image: a FIFO \(named pipe\), not a file: .*fifo-0\.png$/],
    ["/dev/zero", () => "/dev/zero", /^Cannot read image: a character device, not a file: \/dev\/zero$/],
    ["/dev/urandom", () => "/dev/urandom", /a character device, not a file/],
    ["a Unix socket", () => path("socket.png"), /a socket, not a file/],
    ["a folder", () => folder, /a directory, not a file/],
  ])("refuses %s within the bound", async (_what, source, message) => {
    const error = await expectRefusal(ask(source()), ImageError, "IMAGE_UNREADABLE", message, REFUSED_WITHIN_MS);
    expect(error.fix).toMatch(/^Pass a regular file/);
  });

  it.runIf(process.platform === "linux" && existsSync("/dev/stdin"))("refuses /dev/stdin", async () => {
    await expectRefusal(ask("/dev/stdin"), ImageError, "IMAGE_UNREADABLE", /not a file: \/dev\/stdin$/, REFUSED_WITHIN_MS);
  });

  it("refuses four FIFOs in one call and in four calls at once, while a normal call meanwhile answers", async () => {
    const started = performance.now();
    const calls = [
      ask(path("fifo-1.png"), path("fifo-2.png"), path("fifo-3.png"), path("fifo-4.png"))(),
      ...[1, 2, 3, 4].map((index) => ask(path(`fifo-${index}.png`))()),
    ];
    const normal = model.generate([user(image(demoSecond), colourQuestion)], { maxNewTokens: 12 });
    const outcomes = await Promise.allSettled(calls);
    expect(performance.now() - started).toBeLessThan(REFUSED_WITHIN_MS);
    for (const outcome of outcomes) {
      expect(outcome.status).toBe("rejected");
      expect((outcome as PromiseRejectedResult).reason).toMatchObject({
        code: "IMAGE_UNREADABLE",
        message: expect.stringContaining("a FIFO"),
      });
    }
    expect((await normal).text.toLowerCase()).toContain("blue");
    await expectServes(model);
  });
});

describe("the CLI refuses a FIFO as --image or --messages", () => {
  // The built CLI as a user runs it; nothing ever writes to the FIFOs, so reading one would hang forever.
  async function cli(args: string[]) {
    const started = performance.now();
    const result = await execa(process.execPath, [join(repoRoot, "dist", "cli", "main.js"), "generate", ...args], {
      reject: false,
      env: { IDEFICS2_PYTHON: testPython() },
      timeout: CLI_WITHIN_MS * 2,
    });
    return { ...result, ms: performance.now() - started };
  }

  it.each([
    [
      "--image FIFO",
      () => ["--prompt", colourQuestion, "--image", path("fifo-5.png")],
      /\[IMAGE_UNREADABLE\]: Cannot read image: a FIFO \(named pipe\), not a file: /,
    ],
    [
      "--messages FIFO",
      () => ["--messages", path("messages.json"), "--image", demoSecond],
      /\[INVALID_MESSAGES\]: Cannot read --messages .*messages\.json: a FIFO \(named pipe\), not a regular file/,
    ],
    [
      "--messages /dev/zero",
      () => ["--messages", "/dev/zero", "--image", demoSecond],
      /\[INVALID_MESSAGES\]: Cannot read --messages \/dev\/zero: a character device, not a regular file/,
    ],
    [
      "--image on a messages file's picture that is a FIFO",
      () => ["--messages", path("conversation.json"), "--image", path("fifo-5.png")],
      /a FIFO \(named pipe\), not a file/,
    ],
  ])("%s: exit code 1 and one error line, within the bound", async (_what, args, line) => {
    const result = await cli(args());
    expect(result.timedOut).toBe(false);
    expect(result.exitCode).toBe(1);
    // Besides the progress display's plain lines, once the model loads (stderr is no terminal here).
    const lines = result.stderr
      .split("\n")
      .filter(Boolean)
      .filter((text) => !/^\[ *\d+(\.\d)? (ms|s)\] [a-z-]+ /.test(text));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^idefics2: error /);
    expect(lines[0]).toMatch(line);
    expect(result.ms).toBeLessThan(CLI_WITHIN_MS);
  });
});

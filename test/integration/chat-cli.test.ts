import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterEach, describe, expect, it } from "vitest";
import { demoFirst, demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { repoRoot } from "../helpers/reference.js";

const cli = join(repoRoot, "dist", "cli", "main.js");
const env = { ...process.env, IDEFICS2_PYTHON: testPython(), TERM: "dumb" };

/** `idefics2 chat` on a real pseudo-terminal (util-linux `script`): keys go in as a person types them. */
class Terminal {
  readonly child: ChildProcess;
  output = "";
  readonly exited: Promise<number | null>;

  constructor(args: string[]) {
    const command = [process.execPath, cli, "chat", ...args].map((word) => `'${word.replace(/'/g, "'\\''")}'`).join(" ");
    this.child = spawn("script", ["-qfec", command, "/dev/null"], { env, stdio: ["pipe", "pipe", "pipe"] });
    this.child.stdout?.on("data", (chunk: Buffer) => (this.output += chunk.toString("utf8")));
    this.child.stderr?.on("data", (chunk: Buffer) => (this.output += chunk.toString("utf8")));
    this.exited = new Promise((resolve) => this.child.on("exit", (code) => resolve(code)));
  }

  type(keys: string): void {
    this.child.stdin?.write(keys);
  }

  /** Waits until the output after `from` matches; returns the index after the match. */
  async waitFor(pattern: RegExp, from = 0, timeoutMs = 120_000): Promise<number> {
    const started = Date.now();
    for (;;) {
      const match = pattern.exec(this.output.slice(from));
      if (match) return from + match.index + match[0].length;
      if (Date.now() - started > timeoutMs) throw new Error(`no ${pattern} after ${timeoutMs} ms; output:\n${this.output.slice(-3000)}`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
}

let terminal: Terminal | undefined;
afterEach(() => {
  terminal?.child.kill("SIGKILL");
  terminal = undefined;
});

describe("idefics2 chat in a terminal", () => {
  it("attaches a picture, answers, stops an answer on Ctrl-C without leaving, answers again, and quits", async () => {
    // Every answer is forced long, so that Ctrl-C lands in the middle of one.
    terminal = new Terminal(["--max-new-tokens", "600", "--min-new-tokens", "600"]);
    const t = terminal;
    let at = await t.waitFor(/>>> /);
    t.type(`/image ${demoSecond}\r`);
    at = await t.waitFor(/Attached 1 picture to your next message: .*second\.jpg/, at);
    t.type("What colour is the shape?\r");
    at = await t.waitFor(/\(600 tokens in [\d.]+ s, [\d.]+ tokens\/s\)/, at);
    expect(t.output.slice(Math.max(0, at - 20000), at)).toMatch(/blue/);
    at = await t.waitFor(/>>> /, at);

    t.type("Tell me more about it.\r");
    at = await t.waitFor(/Tell me more about it\.[\r\n]+\S/, at);
    t.type("\u0003");
    at = await t.waitFor(/\[stopped: the answer was not added to the conversation\]/, at);
    at = await t.waitFor(/>>> /, at);

    t.type("What colour is the shape?\r");
    at = await t.waitFor(/\(600 tokens in [\d.]+ s, [\d.]+ tokens\/s\)/, at);
    at = await t.waitFor(/>>> /, at);
    t.type("/quit\r");
    expect(await t.exited).toBe(0);
  }, 300_000);

  it("leaves on a second Ctrl-C at the prompt, and on Ctrl-D", async () => {
    terminal = new Terminal([]);
    let at = await terminal.waitFor(/>>> /);
    terminal.type("\u0003");
    at = await terminal.waitFor(/Press Ctrl-C again or Ctrl-D to leave/, at);
    terminal.type("\u0003");
    expect(await terminal.exited).toBe(0);

    terminal = new Terminal([]);
    await terminal.waitFor(/>>> /);
    terminal.type("\u0004");
    expect(await terminal.exited).toBe(0);
  }, 300_000);
});

describe("idefics2 chat with piped stdin", () => {
  it("answers one turn per line on stdout, keeps the history, saves it, and a restored chat goes on alike", async () => {
    const folder = mkdtempSync(join(tmpdir(), "idefics2-chat-cli-"));
    const saved = join(folder, "chat.json");
    const first = await execa(process.execPath, [cli, "chat", "--max-new-tokens", "16"], {
      env,
      reject: false,
      input: [
        `/image ${demoFirst}`,
        "What colour is the shape?",
        `'${demoSecond}'`,
        "And this one?",
        `/save ${saved}`,
        "/bogus",
        "Which is bigger?",
      ].join("\n"),
    });
    expect(first.exitCode).toBe(0);
    const answers = first.stdout.split("\n");
    expect(answers).toHaveLength(3);
    expect(answers[1]?.toLowerCase()).toContain("blue");
    expect(first.stderr).toMatch(/Attached 1 picture .*first\.png/);
    expect(first.stderr).toMatch(/Attached 1 picture .*second\.jpg/);
    expect(first.stderr).toMatch(/Unknown command \/bogus/);

    const history = JSON.parse(readFileSync(saved, "utf8"));
    expect(history.map((message: { role: string }) => message.role)).toEqual(["user", "assistant", "user", "assistant"]);
    const restored = await execa(process.execPath, [cli, "chat", "--max-new-tokens", "16"], {
      env,
      reject: false,
      input: [`/load ${saved}`, "Which is bigger?"].join("\n"),
    });
    expect(restored.exitCode).toBe(0);
    expect(restored.stdout).toBe(answers[2]);
  });

  it("reports a failed turn on stderr, goes on with the next, and exits 1", async () => {
    const result = await execa(process.execPath, [cli, "chat", "--max-new-tokens", "8"], {
      env,
      reject: false,
      input: ["/image /nonexistent/picture.png", "What is it?", "/reset", "Hello"].join("\n"),
    });
    expect(result.stderr).toMatch(/idefics2: error \[IMAGE_UNREADABLE\]: Cannot read image: no such file: \/nonexistent\/picture\.png/);
    expect(result.stdout.split("\n")).toHaveLength(1);
    expect(result.exitCode).toBe(1);
  });

  it("refuses a bad option before loading the model", async () => {
    const started = Date.now();
    const result = await execa(process.execPath, [cli, "chat", "--max-new-tokens=-3"], { env, reject: false, input: "" });
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(/INVALID_OPTIONS.*maxNewTokens/);
    expect(Date.now() - started).toBeLessThan(5000);
  });
});

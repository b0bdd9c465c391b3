import { describe, expect, it } from "vitest";
import { InvalidInputError, WorkerCrashedError } from "../../src/errors.js";
import { lastOutputLine, printable, printableExcerpt, quotedInput } from "../../src/printable.js";

// Every character that can end a line, move the cursor, recolour or reorder a terminal's text, or that is no
// character at all: each must come out as a visible escape.
const HOSTILE = [
  "\n",
  "\r",
  "\r\n",
  "\t",
  "\u0000",
  "\u0007",
  "\u0008",
  "\u000b",
  "\u000c",
  "\u001b",
  "\u001b[2K\u001b[1G",
  "\u007f",
  "\u0085",
  "\u009b",
  "\u2028",
  "\u2029",
  "\u202e",
  "\u2066",
  "\u200f",
  "\ud800",
  "\udfff",
];
// Anything a terminal would take as the end of a line, or that must not reach it raw.
const UNSAFE = /[\p{Cc}\u2028\u2029\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]|\p{Cs}/u;

describe("printable", () => {
  it.each(HOSTILE.map((text) => [JSON.stringify(text), text]))("escapes %s so that nothing unsafe is left", (_shown, text) => {
    const escaped = printable(`key${text}idefics2: error [FORGED]: x`);
    expect(escaped).not.toMatch(UNSAFE);
    expect(escaped).toContain("idefics2: error [FORGED]: x");
    expect(escaped.startsWith("key\\")).toBe(true);
  });

  it("names the common ones as in source code and the rest by code point", () => {
    expect(printable("a\nb\rc\td")).toBe("a\\nb\\rc\\td");
    expect(printable("\u001b[31m\u2028\ud800")).toBe("\\u001b[31m\\u2028\\ud800");
  });

  it("leaves well-formed text, emoji and backslashes alone, so escaping twice changes nothing", () => {
    const text = "naïve 中文 😀 C:\\path\\n";
    expect(printable(text)).toBe(text);
    const hostile = HOSTILE.join("|");
    expect(printable(printable(hostile))).toBe(printable(hostile));
  });

  it("cuts after escaping and never splits a surrogate pair", () => {
    expect(printableExcerpt("\n".repeat(1000), 100)).toHaveLength(100);
    const cut = printableExcerpt(`${"x".repeat(8)}😀😀`, 10);
    expect(cut).toBe(`${"x".repeat(8)}…`);
    expect(cut).not.toMatch(/\p{Cs}/u);
  });
});

describe("lastOutputLine", () => {
  it("keeps what a terminal shows last of a progress bar redrawn with \\r, without its escape sequences", () => {
    const bar =
      "Loading weights:   0%|          | 0/10\rLoading weights:  50%|█████     | 5/10\rLoading weights: 100%|██████████| 10/10\r\n";
    expect(lastOutputLine(`${bar}\u001b[31mKilled\u001b[0m\n\n`)).toBe("Killed");
    expect(lastOutputLine(bar)).toBe("Loading weights: 100%|██████████| 10/10");
    expect(lastOutputLine("Error\u001b]0;title\u0007 here\u0000\n")).toBe("Error here\\u0000");
    expect(lastOutputLine("\n\r\n")).toBe("");
  });
});

describe("error messages quote input on one line", () => {
  it("escapes control characters in any Idefics2Error's message and fix, and bounds its length", () => {
    const error = new InvalidInputError("INVALID_OPTIONS", `bad\nidefics2: error [FORGED]: ${"x".repeat(5000)}`, { fix: "do\rthis" });
    expect(error.message).not.toMatch(UNSAFE);
    expect(error.message.length).toBeLessThanOrEqual(1000);
    expect(error.fix).toBe("do\\rthis");
    expect(error.summary).not.toMatch(UNSAFE);
  });

  it("takes a crash message from the last line the weight-loading bar left, with no \\r", () => {
    const stderrTail = "Loading weights: 10%\rLoading weights: 90%\r\u001b[2KLoading weights: 100%\rKilled\r\n";
    const error = new WorkerCrashedError({ exitCode: null, signal: "SIGKILL", stderrTail });
    expect(error.message).toBe("The Python worker was killed by SIGKILL: Killed");
    expect(error.stderrTail).toBe(stderrTail);
  });
});

describe("quotedInput", () => {
  it("quotes short input whole and long input by its start and its length, whatever the length", () => {
    expect(quotedInput("/tmp/a.png")).toBe("/tmp/a.png");
    expect(quotedInput("x".repeat(120))).toBe("x".repeat(120));
    expect(quotedInput("x".repeat(121))).toBe(`${"x".repeat(119)}… (121 characters)`);
    const huge = quotedInput(`a\n${"b".repeat(50_000_000)}`);
    expect(huge).toBe(`a\\n${"b".repeat(116)}… (50,000,002 characters)`);
    expect(quotedInput("\n".repeat(100))).toMatch(/^(\\n){59}\\… \(100 characters\)$/);
  });
});

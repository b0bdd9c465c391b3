// Error messages quote what the caller gave (paths, keys, values) and what a child printed. Both are escaped here, so
// a message stays one line that says what it quotes: a newline in a key can never forge a second
// `idefics2: error [...]` line, and an escape sequence never reaches the terminal.

// C0 and C1 controls and DEL, the Unicode line and paragraph separators, the bidirectional controls (text shown in
// an order other than its own), and lone surrogates (with the `u` flag a well-formed pair is one code point).
const UNPRINTABLE = /[\p{Cc}\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]|\p{Cs}/gu;
const NAMED: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/**
 * `text` with every control character, line separator, bidirectional control and lone surrogate written as an
 * escape (`\n`, `\u001b`, `\u2028`, `\ud800`), so it prints as one line and shows what it holds. Backslashes are
 * left alone, so escaping twice changes nothing. @internal
 */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (found) => NAMED[found] ?? `\\u${(found.codePointAt(0) ?? 0).toString(16).padStart(4, "0")}`);
}

/**
 * `text` made printable, then shortened to at most `max` characters (an ellipsis marks the cut, which never
 * splits a surrogate pair). @internal
 */
export function printableExcerpt(text: string, max: number): string {
  const escaped = printable(text);
  if (escaped.length <= max) return escaped;
  let end = Math.max(0, max - 1);
  if (/[\ud800-\udbff]/.test(escaped.charAt(end - 1))) end--;
  return `${escaped.slice(0, end)}…`;
}

/** The most characters of one piece of the caller's input (a path, URL, value, name) an error message quotes. @internal */
export const MAX_QUOTED_INPUT = 120;

/**
 * One piece of the caller's input as an error message quotes it: printable, and cut to `max` characters with
 * its full length named (`/a/very/long/pa… (4,096 characters)`), so a huge input never makes a huge message. @internal
 */
export function quotedInput(text: string, max = MAX_QUOTED_INPUT): string {
  // Only the head is escaped (escaping never shortens text), so a gigabyte of input costs no more than a line.
  if (text.length <= max) {
    const escaped = printable(text);
    if (escaped.length <= max) return escaped;
  }
  return `${printableExcerpt(text.slice(0, max + 1), max)} (${groupDigits(text.length)} characters)`;
}

/** 2059 → "2,059". @internal */
export function groupDigits(count: number): string {
  return String(count).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

// CSI and OSC sequences (colours, cursor moves, window titles) a child writes for a terminal.
// biome-ignore lint/suspicious/noControlCharactersInRegex: ESC and BEL are what these sequences are made of.
const TERMINAL_SEQUENCE = /\u001b(?:\[[0-?]*[ -/]*[@-~]|\][^\u0007\u001b]*(?:\u0007|\u001b\\)|[@-Z\\-_])/g;

/**
 * The line a terminal would show last for a child's output: progress bars redraw with `\r`, so only what follows
 * the last one counts; terminal sequences are dropped and any other control character escaped. At most `max`
 * characters; "" when there is no output. @internal
 */
export function lastOutputLine(output: string, max = 300): string {
  const lines = output
    .replace(TERMINAL_SEQUENCE, "")
    .split(/\r\n|\n/)
    .map((line) =>
      (
        line
          .split("\r")
          .filter((part) => part.trim() !== "")
          .at(-1) ?? ""
      ).trim(),
    )
    .filter((line) => line !== "");
  return printableExcerpt(lines.at(-1) ?? "", max);
}

import type { Readable } from "node:stream";
import { InvalidInputError } from "../errors.js";

/** The most stdin `--prompt -` or `--messages -` reads: a request's text cannot be larger (16 MiB of JSON). */
export const MAX_STDIN_BYTES = 16 * 1024 * 1024;

/**
 * All of stdin as UTF-8 text (a pipe, a file or a terminal until Ctrl-D), for the flag `flag` given as `-`: refused
 * with InvalidInputError past `maxBytes`, as soon as it gets there, and when it holds nothing but whitespace.
 * A byte-order mark and one final line ending (what `echo` adds) are dropped.
 */
export async function readStdinText(flag: string, input: Readable = process.stdin, maxBytes = MAX_STDIN_BYTES): Promise<string> {
  if ((input as { isTTY?: boolean }).isTTY) process.stderr.write(`Reading ${flag} from the terminal; end it with Ctrl-D.\n`);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of input as AsyncIterable<Buffer | string>) {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    total += bytes.byteLength;
    if (total > maxBytes) {
      input.destroy();
      throw new InvalidInputError("INVALID_MESSAGES", `${flag} - read more than ${maxBytes} bytes from stdin, the limit`, {
        fix: "Send less text: one request carries at most 16 MiB.",
      });
    }
    chunks.push(bytes);
  }
  const text = Buffer.concat(chunks, total)
    .toString("utf8")
    .replace(/^\ufeff/, "")
    .replace(/\r?\n$/, "");
  if (text.trim() === "") {
    throw new InvalidInputError("INVALID_MESSAGES", `${flag} - read ${total === 0 ? "nothing" : "only whitespace"} from stdin`, {
      fix:
        flag === "--messages"
          ? "Pipe a JSON messages list in (`idefics2 generate --messages - < conversation.json`), or name its file."
          : `Pipe the text in (\`echo "What is this?" | idefics2 generate ${flag} -\`), or give it on the command line.`,
    });
  }
  return text;
}

import { InvalidInputError } from "../errors.js";
import { FileReadError, readRegularFile } from "../images/read-regular-file.js";
import { image, Messages, user } from "../messages.js";
import { Idefics2 } from "../model.js";
import { parseOrThrow } from "../parse-or-throw.js";
import { printableExcerpt, quotedInput } from "../printable.js";
import { prepareGeneration, type GenerateCallOptions } from "../prepare-generation.js";
import type { GenerationResult } from "../model.js";
import { parseCommandLine } from "./command-line.js";
import { GENERATION_FLAGS_USAGE, generationFlags, generationOptionsFrom } from "./generation-flags.js";
import { loadOptionsFrom, MODEL_FLAGS_USAGE, modelFlags } from "./model-flags.js";
import { createProgressDisplay, type ProgressDisplay, showingProgress } from "./progress-display.js";
import { readStdinText } from "./read-stdin.js";
import { UsageError } from "./usage-error.js";

// A messages file is JSON text: far below this, which only stops a file that never ends.
const MAX_MESSAGES_BYTES = 64 * 1024 * 1024;
const READ_TIMEOUT_MS = 30_000;

export const GENERATE_USAGE = `Usage: idefics2 generate [--model DIR_OR_ID] (--messages FILE.json | --prompt TEXT) [--image PATH_OR_URL]... [options]

  --messages FILE.json       the blog's messages list as JSON; images fill its image parts in order
                             (\`--messages -\` reads it from stdin)
  --prompt TEXT              one user turn, every --image first (\`--prompt -\` reads all of stdin, up to 16 MiB)
  --image PATH_OR_URL        repeatable, in order: a file, an http(s) URL or a data: URL
  --json                     print one JSON object: text, tokenIds, finishReason, usage, timings
${MODEL_FLAGS_USAGE}
${GENERATION_FLAGS_USAGE}`;

const flags = {
  ...modelFlags,
  ...generationFlags,
  messages: { type: "string" },
  prompt: { type: "string" },
  image: { type: "string", multiple: true },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

export async function runGenerate(args: string[]): Promise<number> {
  const { values } = parseCommandLine(args, flags, "generate");
  if (values.help) {
    process.stdout.write(`${GENERATE_USAGE}\n`);
    return 0;
  }
  const messages = await conversation(values.messages, values.prompt, values.image ?? []);
  const generation: GenerateCallOptions = { images: values.image ?? [], ...generationOptionsFrom(values) };
  // Everything that can be checked without Python is checked first, so bad input fails in well under a second.
  await prepareGeneration(messages, generation, {}, { stream: false });
  const load = loadOptionsFrom(values, "generate");
  // Progress on stderr (live in a terminal, plain lines otherwise): stdout carries only the answer.
  const display = createProgressDisplay();
  await using model = await showingProgress(display, (onProgress) => Idefics2.load({ ...load, onProgress }));
  const result = values.json ? await model.generate(messages, generation) : await streamToStdout(model, messages, generation, display);
  if (values.json) process.stdout.write(`${JSON.stringify(resultJson(result))}\n`);
  return 0;
}

async function streamToStdout(
  model: Idefics2,
  messages: Messages,
  options: GenerateCallOptions,
  display: ProgressDisplay,
): Promise<GenerationResult> {
  const stream = model.stream(messages, options);
  const started = performance.now();
  let deltas = 0;
  try {
    for await (const delta of stream) {
      display.tokens(++deltas, performance.now() - started);
      process.stdout.write(delta);
    }
    process.stdout.write("\n");
    const result = await stream.result;
    display.answered(result);
    return result;
  } catch (error) {
    display.fail();
    throw error;
  }
}

function resultJson(result: GenerationResult) {
  return { text: result.text, tokenIds: result.tokenIds, finishReason: result.finishReason, usage: result.usage, timings: result.timings };
}

/**
 * The conversation of `--messages FILE.json` (the blog's messages as JSON) or `--prompt TEXT`, for generate and
 * parity; either one given as `-` is read from stdin.
 */
export async function conversation(messagesFile: string | undefined, prompt: string | undefined, images: string[]): Promise<Messages> {
  if ((messagesFile === undefined) === (prompt === undefined)) {
    throw new UsageError("give exactly one of --messages FILE.json or --prompt TEXT", "generate");
  }
  if (prompt !== undefined) {
    const text = prompt === "-" ? await readStdinText("--prompt") : prompt;
    return [user(...images.map(() => image()), text)];
  }
  const fromStdin = messagesFile === "-";
  const where = fromStdin ? "--messages - (stdin)" : `--messages ${quotedInput(messagesFile as string)}`;
  const text = fromStdin ? await readStdinText("--messages") : await readMessagesFile(messagesFile as string, where);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    // The parser's message may quote the text: only its start is kept.
    throw new InvalidInputError("INVALID_MESSAGES", `${where} is not JSON: ${printableExcerpt((cause as Error).message, 200)}`, { cause });
  }
  return parseOrThrow(Messages, json, "INVALID_MESSAGES", `messages in ${fromStdin ? "stdin" : quotedInput(messagesFile as string)}`);
}

// Only a regular file, within a size and a time: `--messages` naming a FIFO or /dev/zero fails at once.
async function readMessagesFile(file: string, where: string): Promise<string> {
  try {
    return (await readRegularFile(file, { maxBytes: MAX_MESSAGES_BYTES, timeoutMs: READ_TIMEOUT_MS })).toString("utf8");
  } catch (cause) {
    const reason = cause instanceof FileReadError ? readFailure(cause) : String(cause);
    throw new InvalidInputError("INVALID_MESSAGES", `Cannot read ${where}: ${reason}`, {
      fix: cause instanceof FileReadError && cause.kind === "not-regular" ? "Pass a regular JSON file." : undefined,
      cause,
    });
  }
}

function readFailure(error: FileReadError): string {
  if (error.kind === "not-regular") return `${error.reason}, not a regular file`;
  if (error.kind === "too-large") return `larger than ${MAX_MESSAGES_BYTES} bytes, the limit for a messages file`;
  return error.details.errno ? `${error.reason} (${error.details.errno})` : error.reason;
}

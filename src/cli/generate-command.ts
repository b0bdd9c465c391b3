import { InvalidInputError } from "../errors.js";
import { FileReadError, readRegularFile } from "../images/read-regular-file.js";
import { image, Messages, user } from "../messages.js";
import { Idefics2 } from "../model.js";
import { QuantizationMode } from "../options.js";
import { parseOrThrow } from "../parse-or-throw.js";
import { printableExcerpt, quotedInput } from "../printable.js";
import { prepareGeneration, type GenerateCallOptions } from "../prepare-generation.js";
import type { GenerationResult } from "../model.js";
import { numberFlag, parseCommandLine } from "./command-line.js";
import { readStdinText } from "./read-stdin.js";
import { UsageError } from "./usage-error.js";

// A messages file is JSON text: far below this, which only stops a file that never ends.
const MAX_MESSAGES_BYTES = 64 * 1024 * 1024;
const READ_TIMEOUT_MS = 30_000;

export const GENERATE_USAGE = `Usage: idefics2 generate [--model DIR_OR_ID] (--messages FILE.json | --prompt TEXT) [--image PATH_OR_URL]... [options]

  --model DIR_OR_ID          a save_pretrained folder or a hub id (default: the embedded tiny model)
  --messages FILE.json       the blog's messages list as JSON; images fill its image parts in order
                             (\`--messages -\` reads it from stdin)
  --prompt TEXT              one user turn, every --image first (\`--prompt -\` reads all of stdin, up to 16 MiB)
  --image PATH_OR_URL        repeatable, in order: a file, an http(s) URL or a data: URL
  --quantization MODE        none | 8bit | 4bit (default none)
  --device-map MAP           auto | cpu | cuda | cuda:N (default auto)
  --dtype DTYPE              auto | float32 | bfloat16 | float16 (default auto)
  --image-splitting / --no-image-splitting
  --longest-edge N
  --max-new-tokens N         (default 500)
  --min-new-tokens N  --do-sample  --temperature X  --top-p X  --top-k N
  --repetition-penalty X  --no-repeat-ngram-size N  --num-beams N  --seed N  --stop TEXT (repeatable)
  --timeout-ms N
  --python PATH              use this interpreter as it is
  --json                     print one JSON object: text, tokenIds, finishReason, usage, timings`;

const flags = {
  model: { type: "string" },
  messages: { type: "string" },
  prompt: { type: "string" },
  image: { type: "string", multiple: true },
  quantization: { type: "string" },
  "device-map": { type: "string" },
  dtype: { type: "string" },
  "image-splitting": { type: "boolean" },
  "no-image-splitting": { type: "boolean" },
  "longest-edge": { type: "string" },
  "max-new-tokens": { type: "string" },
  "min-new-tokens": { type: "string" },
  "do-sample": { type: "boolean" },
  temperature: { type: "string" },
  "top-p": { type: "string" },
  "top-k": { type: "string" },
  "repetition-penalty": { type: "string" },
  "no-repeat-ngram-size": { type: "string" },
  "num-beams": { type: "string" },
  seed: { type: "string" },
  stop: { type: "string", multiple: true },
  "timeout-ms": { type: "string" },
  python: { type: "string" },
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
  const options: GenerateCallOptions = {
    images: values.image ?? [],
    maxNewTokens: numberFlag("max-new-tokens", values["max-new-tokens"]),
    minNewTokens: numberFlag("min-new-tokens", values["min-new-tokens"]),
    doSample: values["do-sample"],
    temperature: numberFlag("temperature", values.temperature),
    topP: numberFlag("top-p", values["top-p"]),
    topK: numberFlag("top-k", values["top-k"]),
    repetitionPenalty: numberFlag("repetition-penalty", values["repetition-penalty"]),
    noRepeatNgramSize: numberFlag("no-repeat-ngram-size", values["no-repeat-ngram-size"]),
    numBeams: numberFlag("num-beams", values["num-beams"]),
    seed: numberFlag("seed", values.seed),
    stopStrings: values.stop,
    timeoutMs: numberFlag("timeout-ms", values["timeout-ms"]),
  };
  const generation = withoutUndefined(options);
  // Everything that can be checked without Python is checked first, so bad input fails in well under a second.
  await prepareGeneration(messages, generation, {}, { stream: false });
  const quantization =
    values.quantization === undefined
      ? undefined
      : parseOrThrow(QuantizationMode, values.quantization, "INVALID_OPTIONS", "--quantization");
  if (values["image-splitting"] && values["no-image-splitting"]) {
    throw new UsageError("--image-splitting and --no-image-splitting contradict each other", "generate");
  }
  const imageSplitting = values["image-splitting"] ? true : values["no-image-splitting"] ? false : undefined;

  await using model = await Idefics2.load(
    withoutUndefined({
      model: values.model,
      quantization,
      deviceMap: values["device-map"] as never,
      dtype: values.dtype as never,
      imageSplitting,
      longestEdge: numberFlag("longest-edge", values["longest-edge"]),
      python: values.python,
    }),
  );
  const result = values.json ? await model.generate(messages, generation) : await streamToStdout(model, messages, generation);
  if (values.json) process.stdout.write(`${JSON.stringify(resultJson(result))}\n`);
  return 0;
}

async function streamToStdout(model: Idefics2, messages: Messages, options: GenerateCallOptions): Promise<GenerationResult> {
  const stream = model.stream(messages, options);
  for await (const delta of stream) process.stdout.write(delta);
  process.stdout.write("\n");
  return stream.result;
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

function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, entry]) => entry !== undefined)) as T;
}

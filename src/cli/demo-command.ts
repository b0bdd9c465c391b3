import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { demoAssetsPath } from "../embedded-model.js";
import { Messages } from "../messages.js";
import { Idefics2 } from "../model.js";
import { QuantizationMode } from "../options.js";
import { parseOrThrow } from "../parse-or-throw.js";
import { parseCommandLine } from "./command-line.js";
import { createProgressDisplay, showingProgress } from "./progress-display.js";

const DEMO_USAGE = "Usage: idefics2 demo [--quantization none|8bit|4bit] [--python PATH]";

/** The demo's pictures, in the order of the conversation's image parts. */
export const demoImages = [join(demoAssetsPath, "first.png"), join(demoAssetsPath, "second.jpg")];
export const demoConversationPath = join(demoAssetsPath, "conversation.json");

// The blog's two-image conversation, on the embedded model: it should name the second picture's colour.
export async function runDemo(args: string[]): Promise<number> {
  const { values } = parseCommandLine(
    args,
    { quantization: { type: "string" }, python: { type: "string" }, help: { type: "boolean", short: "h" } },
    "demo",
  );
  if (values.help) {
    process.stdout.write(`${DEMO_USAGE}\n`);
    return 0;
  }
  const quantization = parseOrThrow(QuantizationMode, values.quantization ?? "none", "INVALID_OPTIONS", "--quantization");
  const messages = parseOrThrow(
    Messages,
    JSON.parse(await readFile(demoConversationPath, "utf8")),
    "INVALID_MESSAGES",
    "demo conversation",
  );

  // Progress on stderr: live in a terminal, plain lines otherwise.
  await using model = await showingProgress(createProgressDisplay(), (onProgress) =>
    Idefics2.load({ quantization, ...(values.python === undefined ? {} : { python: values.python }), onProgress }),
  );
  let picture = 0;
  for (const message of messages) {
    const parts = message.content.map((part) => (part.type === "text" ? part.text : `[${demoImages[picture++]}] `));
    process.stdout.write(`${capitalize(message.role)}: ${parts.join("")}\n`);
  }
  process.stdout.write("Assistant:");
  const stream = model.stream(messages, { images: demoImages, maxNewTokens: 64 });
  for await (const delta of stream) process.stdout.write(delta);
  const result = await stream.result;
  process.stdout.write(
    `\n\n(${model.info.quantization}, ${result.usage.promptTokens} prompt tokens of which ${result.usage.imageTokens} image tokens, ` +
      `${result.usage.completionTokens} generated in ${Math.round(result.timings.totalMs)} ms)\n`,
  );
  return 0;
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

import { writeFile } from "node:fs/promises";
import path from "node:path";
import { Idefics2Error } from "../errors.js";
import type { Messages } from "../messages.js";
import { QuantizationMode } from "../options.js";
import { checkParity } from "../parity/check-parity.js";
import { ParityMethod, type ParityOptions } from "../parity/parity-options.js";
import { parityJunitXml } from "../parity/parity-junit.js";
import type { ParityReport } from "../parity/parity-report.js";
import { parseOrThrow } from "../parse-or-throw.js";
import { Decoder } from "../protocol/option-ranges.js";
import { numberFlag, parseCommandLine } from "./command-line.js";
import { demoConversationPath, demoImages } from "./demo-command.js";
import { createProgressDisplay, showingProgress } from "./progress-display.js";
import { conversation } from "./generate-command.js";
import { UsageError } from "./usage-error.js";

export const PARITY_USAGE = `Usage: idefics2 parity [--model DIR_OR_ID] [--messages FILE.json | --prompt TEXT] [--image PATH_OR_URL]... [options]

Runs the blog's program (scripts/reference/reference.py, shipped with the package) and the SDK on the same
conversation and pictures, and compares them: equal greedy token ids with the reference decoder; with the fast
decoder on a GPU, teacher-forced logits within the noise of another valid kernel and the same top-1 token on
decisive steps. Without --messages or --prompt: the blog's two-image conversation on the demo pictures.
Exit code 0 when parity holds, 1 when it does not (or a side could not run), 2 for a bad command line.

  --model DIR_OR_ID          a save_pretrained folder or a hub id (default: the embedded tiny model)
  --messages FILE.json       the blog's messages list as JSON; images fill its image parts in order
  --prompt TEXT              one user turn, every --image first
  --image PATH_OR_URL        repeatable, in order
  --quantization MODE        none | 8bit | 4bit (default none), on both sides
  --decoder DECODER          auto | fast | reference (default auto: fast on one CUDA device, else reference)
  --method METHOD            auto | token-ids | teacher-forced (default auto: teacher-forced for the fast decoder on CUDA)
  --max-new-tokens N         (default 64)
  --no-image-splitting       turn image splitting off on both sides
  --name NAME                the conversation's name in the report (default: the messages file's name)
  --reference-quantization MODE
                             run the reference at another quantization, to see the check catch drift
  --python PATH              use this interpreter as it is, for both sides
  --home DIR                 where the managed environment lives
  --json                     print the whole report as one JSON object instead of the verdict line
  --junit FILE               also write a JUnit XML file (one testcase per check)`;

const flags = {
  model: { type: "string" },
  messages: { type: "string" },
  prompt: { type: "string" },
  image: { type: "string", multiple: true },
  quantization: { type: "string" },
  decoder: { type: "string" },
  method: { type: "string" },
  "max-new-tokens": { type: "string" },
  "no-image-splitting": { type: "boolean" },
  name: { type: "string" },
  "reference-quantization": { type: "string" },
  python: { type: "string" },
  home: { type: "string" },
  json: { type: "boolean" },
  junit: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

// Prints one verdict line (or the JSON report) and exits 0 only when parity holds.
export async function runParity(args: string[]): Promise<number> {
  const { values } = parseCommandLine(args, flags, "parity");
  if (values.help) {
    process.stdout.write(`${PARITY_USAGE}\n`);
    return 0;
  }
  if (values.messages !== undefined && values.prompt !== undefined) {
    throw new UsageError("give at most one of --messages FILE.json or --prompt TEXT", "parity");
  }
  if (values.junit === "") throw new UsageError("--junit needs a file name", "parity");
  const images = values.image;
  const demo = values.messages === undefined && values.prompt === undefined;
  if (demo && images !== undefined) {
    throw new UsageError(
      "--image needs --messages FILE.json or --prompt TEXT (without them the demo conversation uses its own pictures)",
      "parity",
    );
  }
  const name = values.name ?? (demo ? "demo conversation" : values.messages ? path.basename(values.messages) : "prompt");

  const options: ParityOptions = {
    messages: demo ? await demoConversation() : await conversation(values.messages, values.prompt, images ?? []),
    ...(demo ? { images: demoImages } : images ? { images } : {}),
    name,
    ...(values.model === undefined ? {} : { model: values.model }),
    ...(values.quantization === undefined
      ? {}
      : { quantization: parseOrThrow(QuantizationMode, values.quantization, "INVALID_OPTIONS", "--quantization") }),
    ...(values["reference-quantization"] === undefined
      ? {}
      : {
          referenceQuantization: parseOrThrow(
            QuantizationMode,
            values["reference-quantization"],
            "INVALID_OPTIONS",
            "--reference-quantization",
          ),
        }),
    ...(values.decoder === undefined ? {} : { decoder: parseOrThrow(Decoder, values.decoder, "INVALID_OPTIONS", "--decoder") }),
    ...(values.method === undefined ? {} : { method: parseOrThrow(ParityMethod, values.method, "INVALID_OPTIONS", "--method") }),
    ...(values["max-new-tokens"] === undefined ? {} : { maxNewTokens: numberFlag("max-new-tokens", values["max-new-tokens"]) as number }),
    ...(values["no-image-splitting"] ? { imageSplitting: false as const } : {}),
    ...(values.python === undefined ? {} : { python: values.python }),
    ...(values.home === undefined ? {} : { home: values.home }),
  };

  let report: ParityReport;
  try {
    report = await showingProgress(createProgressDisplay(), (onProgress) =>
      checkParity(options, { onProgress: (event) => onProgress({ type: "stage", ...event }) }),
    );
  } catch (error) {
    // CI still gets its XML: the conversation's check could not run, as a JUnit error.
    if (values.junit !== undefined && error instanceof Idefics2Error) {
      const failure = { name, error: { name: error.name, message: error.message, code: error.code, fix: error.fix } };
      await writeFile(values.junit, parityJunitXml([failure]));
    }
    throw error;
  }
  if (values.junit !== undefined) await writeFile(values.junit, parityJunitXml([report]));
  process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : `${report.verdict}\n`);
  return report.ok ? 0 : 1;
}

async function demoConversation(): Promise<Messages> {
  return conversation(demoConversationPath, undefined, []);
}

#!/usr/bin/env node
import { readFileSync } from "node:fs";
import path from "node:path";
import { Idefics2Error } from "../errors.js";
import { printable, printableExcerpt, quotedInput } from "../printable.js";
import { packageRoot } from "../runtime/package-root.js";
import { runChat } from "./chat-command.js";
import { runDemo } from "./demo-command.js";
import { runDoctorCommand } from "./doctor-command.js";
import { runGenerate } from "./generate-command.js";
import { runParity } from "./parity-command.js";
import { runServe } from "./serve-command.js";
import { runSetup } from "./setup-command.js";
import { UsageError } from "./usage-error.js";

const USAGE = `Usage: idefics2 <command> [options]

Commands:
  setup [--dev] [--python PATH] [--home DIR]   create or check the Python environment
  doctor [--json]                              interpreter, versions, CUDA devices, problems with fixes
  generate [--model DIR_OR_ID] (--messages FILE.json | --prompt TEXT) [--image PATH_OR_URL]... [options]
                                               one answer, streamed; --model defaults to the embedded tiny model,
                                               \`--prompt -\` reads the prompt from stdin
  chat [--model DIR_OR_ID] [--image PATH_OR_URL]... [options]   an interactive conversation (/image, /reset, /save, /load, /quit)
  demo [--quantization none|8bit|4bit]         the blog's two-image conversation on the embedded model
  parity [--messages FILE.json --image ...] [--quantization MODE] [--json] [--junit FILE]
                                               the SDK against the blog's program; exit 0 only when they agree
  serve [--model DIR_OR_ID] [--host ADDRESS] [--port N] [--api-key KEY] [options]
                                               an OpenAI-compatible HTTP server of the model (/v1/chat/completions)

Options:
  --version, -v                                print the package's version
  --help, -h                                   print this help

An image (PATH_OR_URL) is a file path, an http(s) URL or a data: URL (data:image/png;base64,…).
Run \`idefics2 generate --help\` for the generation options, \`idefics2 parity --help\` for the parity check's,
\`idefics2 serve --help\` for the server's.`;

const commands: Record<string, (args: string[]) => Promise<number>> = {
  setup: runSetup,
  doctor: runDoctorCommand,
  generate: runGenerate,
  chat: runChat,
  demo: runDemo,
  parity: runParity,
  serve: runServe,
};

async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(`${USAGE}\n`);
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "-v") {
    process.stdout.write(`${packageVersion()}\n`);
    return 0;
  }
  const command = commands[name];
  if (!command) throw new UsageError(`unknown command "${quotedInput(name)}"; expected one of ${Object.keys(commands).join(", ")}`);
  return command(args);
}

// The installed package's own version, from its package.json.
function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(path.join(packageRoot(), "package.json"), "utf8")) as { version: string };
  return manifest.version;
}

// One line on stderr for every failure the user can act on (what it quotes escaped, so it stays one line); the Python
// traceback stays on the error object.
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UsageError) {
      process.stderr.write(`idefics2: ${error.message}\n${error.hint}\n`);
      process.exitCode = 2;
    } else if (error instanceof Idefics2Error) {
      process.stderr.write(`idefics2: error [${error.code}]: ${printable(error.summary)}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(
        `idefics2: unexpected error: ${printableExcerpt(error instanceof Error ? error.message : String(error), 1000)}\n`,
      );
      process.exitCode = 1;
    }
  },
);

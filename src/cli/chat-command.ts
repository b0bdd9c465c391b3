import { ChatOptions } from "../chat-session.js";
import { Idefics2 } from "../model.js";
import { parseOrThrow } from "../parse-or-throw.js";
import { printable } from "../printable.js";
import { CHAT_HELP } from "./chat-line.js";
import { runChatRepl } from "./chat-repl.js";
import { parseCommandLine } from "./command-line.js";
import { createProgressDisplay, showingProgress } from "./progress-display.js";
import { GENERATION_FLAGS_USAGE, generationFlags, generationOptionsFrom } from "./generation-flags.js";
import { loadOptionsFrom, MODEL_FLAGS_USAGE, modelFlags, withoutUndefined } from "./model-flags.js";

export const CHAT_USAGE = `Usage: idefics2 chat [--model DIR_OR_ID] [--image PATH_OR_URL]... [--system TEXT] [options]

An interactive conversation that keeps its history, pictures included. In a terminal: a prompt, answers streamed as
they come, Ctrl-C stops an answer, Ctrl-D (or Ctrl-C twice) leaves. With stdin from a pipe or a file: one message per
line, each answer on stdout (commands work too), exit status 1 if a turn failed.

  --image PATH_OR_URL        repeatable: pictures for the first message
  --system TEXT              a system turn first
${MODEL_FLAGS_USAGE}
${GENERATION_FLAGS_USAGE}

In the chat:
${CHAT_HELP}`;

const flags = {
  ...modelFlags,
  ...generationFlags,
  image: { type: "string", multiple: true },
  system: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

export async function runChat(args: string[]): Promise<number> {
  const { values } = parseCommandLine(args, flags, "chat");
  if (values.help) {
    process.stdout.write(`${CHAT_USAGE}\n`);
    return 0;
  }
  const { timeoutMs, ...generation } = generationOptionsFrom(values);
  const session: ChatOptions = withoutUndefined({ ...generation, system: values.system });
  // Checked before the model loads: a bad value fails in well under a second.
  parseOrThrow(ChatOptions, session, "INVALID_OPTIONS", "chat option");
  const load = loadOptionsFrom(values, "chat");
  const interactive = Boolean(process.stdin.isTTY);
  // The load's steps on stderr: live in a terminal, plain lines otherwise (stdout carries only answers).
  await using model = await showingProgress(
    createProgressDisplay(),
    (onProgress) => Idefics2.load({ ...load, onProgress }),
    (loaded) => `Loaded ${printable(loaded.info.model)} in ${Math.round(loaded.info.loadMs)} ms`,
  );
  const { failedTurns } = await runChatRepl({
    model,
    session,
    turnTimeoutMs: timeoutMs,
    pictures: values.image ?? [],
    input: process.stdin,
    output: process.stdout,
    status: process.stderr,
    interactive,
  });
  return !interactive && failedTurns > 0 ? 1 : 0;
}

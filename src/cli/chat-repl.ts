import { writeFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import type { ChatOptions, ChatSession } from "../chat-session.js";
import { Idefics2Error } from "../errors.js";
import { describeSource } from "../images/describe-source.js";
import { FileReadError, readRegularFile } from "../images/read-regular-file.js";
import { image } from "../messages.js";
import type { Idefics2 } from "../model.js";
import { printable, printableExcerpt } from "../printable.js";
import { CHAT_HELP, type ChatLine, parseChatLine } from "./chat-line.js";

// A saved conversation is JSON text with its pictures inside: large, but bounded so a wrong file fails at once.
const MAX_SAVED_BYTES = 256 * 1024 * 1024;
const READ_TIMEOUT_MS = 30_000;
const PROMPT = ">>> ";

export interface ChatReplOptions {
  model: Idefics2;
  /** What every session starts from: system turn, generation options. */
  session: ChatOptions;
  /** Each turn's time limit (`--timeout-ms`). */
  turnTimeoutMs?: number | undefined;
  /** Pictures attached to the first message (`--image`). */
  pictures: string[];
  input: NodeJS.ReadableStream;
  /** Answers, and the prompt in a terminal. */
  output: NodeJS.WritableStream;
  /** What the chat says about itself: attachments, saves, errors, speed. */
  status: NodeJS.WritableStream;
  /** A person at a terminal: a prompt, line editing, Ctrl-C stops an answer. Else one turn per line, for scripts. */
  interactive: boolean;
}

/**
 * An interactive conversation, one message per line, like `ollama run`: answers stream as they come. In a terminal
 * Ctrl-C stops the answer being written (the conversation goes on without it) and, at the prompt, a second Ctrl-C
 * (or Ctrl-D) leaves. Resolves with how many turns failed.
 */
export async function runChatRepl(options: ChatReplOptions): Promise<{ failedTurns: number }> {
  const { model, output, status, interactive } = options;
  const lines = createInterface({ input: options.input, output: interactive ? output : undefined, terminal: interactive, prompt: PROMPT });
  const say = (text: string) => status.write(`${text}\n`);
  let chat = model.chat(options.session);
  let pending = [...options.pictures];
  let answering: AbortController | undefined;
  let leaveArmed = false;
  let failedTurns = 0;

  lines.on("SIGINT", () => {
    if (answering) {
      answering.abort();
      return;
    }
    if (lines.line.length > 0) {
      // Like a shell: Ctrl-C drops what was typed and gives a fresh prompt.
      output.write("^C\n");
      lines.write(null, { ctrl: true, name: "u" });
      lines.prompt();
      return;
    }
    if (leaveArmed) {
      output.write("\n");
      lines.close();
      return;
    }
    leaveArmed = true;
    output.write("\n");
    say("(Press Ctrl-C again or Ctrl-D to leave.)");
    lines.prompt();
  });

  if (interactive) {
    say(`Chatting with ${printable(model.info.model)}. /help for commands; Ctrl-D or /quit to leave.`);
    if (pending.length > 0) say(attachedLine(pending));
    lines.prompt();
  }

  for await (const raw of lines) {
    leaveArmed = false;
    const line = parseChatLine(raw);
    if (line.kind === "command" && line.name === "quit") break;
    if (line.kind === "text") {
      const pictures = pending;
      pending = [];
      answering = new AbortController();
      const ok = await answer(chat, [...pictures.map((source) => image(source)), line.text], answering.signal, options);
      answering = undefined;
      if (!ok) {
        failedTurns++;
        // A turn that was not answered keeps its pictures for the next try.
        pending = [...pictures, ...pending];
      }
    } else {
      const next = await handle(line, { chat, pending, model, session: options.session, say });
      chat = next.chat;
      pending = next.pending;
    }
    if (interactive) lines.prompt();
  }
  lines.close();
  return { failedTurns };
}

// Streams one answer; false when it failed or was stopped (the session then keeps its history as it was).
async function answer(chat: ChatSession, parts: Parameters<ChatSession["send"]>[0], signal: AbortSignal, options: ChatReplOptions) {
  const { output, status } = options;
  const stream = chat.send(parts, options.turnTimeoutMs === undefined ? { signal } : { signal, timeoutMs: options.turnTimeoutMs });
  let wrote = false;
  try {
    for await (const delta of stream) {
      output.write(wrote ? delta : delta.trimStart());
      wrote = true;
    }
    const result = await stream;
    output.write("\n");
    if (options.interactive) {
      const seconds = result.timings.totalMs / 1000;
      status.write(
        `(${result.usage.completionTokens} tokens in ${seconds.toFixed(2)} s, ${result.timings.decodeTokensPerSecond.toFixed(1)} tokens/s)\n`,
      );
    }
    return true;
  } catch (error) {
    if (wrote) output.write("\n");
    if (signal.aborted) status.write("[stopped: the answer was not added to the conversation]\n");
    else status.write(`${errorLine(error)}\n`);
    return false;
  }
}

interface CommandState {
  chat: ChatSession;
  pending: string[];
  model: Idefics2;
  session: ChatOptions;
  say: (text: string) => void;
}

async function handle(line: Exclude<ChatLine, { kind: "text" }>, state: CommandState): Promise<{ chat: ChatSession; pending: string[] }> {
  const { chat, pending, say } = state;
  if (line.kind === "empty") return { chat, pending };
  if (line.kind === "unknown-command") {
    say(`Unknown command /${printableExcerpt(line.name, 40)}; /help lists them.`);
    return { chat, pending };
  }
  if (line.kind === "picture") {
    say(attachedLine([...pending, line.source]));
    return { chat, pending: [...pending, line.source] };
  }
  const { name, argument } = line;
  if (name === "help") say(CHAT_HELP);
  if (name === "image") {
    if (argument === "") {
      say("Usage: /image PATH_OR_URL");
      return { chat, pending };
    }
    say(attachedLine([...pending, argument]));
    return { chat, pending: [...pending, argument] };
  }
  if (name === "reset") {
    chat.reset();
    say("The conversation was forgotten; pictures not yet sent were dropped.");
    return { chat, pending: [] };
  }
  if (name === "save" || name === "load") {
    if (argument === "") {
      say(`Usage: /${name} FILE`);
      return { chat, pending };
    }
    try {
      if (name === "save") {
        await writeFile(argument, `${JSON.stringify(await chat.exportHistory(), null, 1)}\n`);
        say(`Saved ${chat.messages.length} messages to ${printableExcerpt(argument, 200)}.`);
        return { chat, pending };
      }
      const restored = state.model.chat({ ...withoutSystem(state.session), history: await readSaved(argument) });
      say(`Loaded ${restored.messages.length} messages from ${printableExcerpt(argument, 200)}.`);
      return { chat: restored, pending: [] };
    } catch (error) {
      say(errorLine(error));
    }
  }
  return { chat, pending };
}

async function readSaved(file: string): Promise<never> {
  let text: string;
  try {
    text = (await readRegularFile(file, { maxBytes: MAX_SAVED_BYTES, timeoutMs: READ_TIMEOUT_MS })).toString("utf8");
  } catch (error) {
    const reason = error instanceof FileReadError ? error.reason : String(error);
    throw new Error(`Cannot read ${printableExcerpt(file, 200)}: ${reason}`);
  }
  try {
    return JSON.parse(text) as never;
  } catch {
    throw new Error(`${printableExcerpt(file, 200)} is not a saved conversation (not JSON)`);
  }
}

// A restored history holds its own system turn.
function withoutSystem(session: ChatOptions): ChatOptions {
  const { system: _system, ...rest } = session;
  return rest;
}

function attachedLine(pictures: string[]): string {
  const names = pictures.map((source) => describeSource(source)).join(", ");
  return `Attached ${pictures.length === 1 ? "1 picture" : `${pictures.length} pictures`} to your next message: ${names}`;
}

function errorLine(error: unknown): string {
  if (error instanceof Idefics2Error) return `idefics2: error [${error.code}]: ${printable(error.summary)}`;
  return `idefics2: ${printableExcerpt(error instanceof Error ? error.message : String(error), 500)}`;
}

import { z } from "zod";
import { InvalidInputError } from "./errors.js";
import { GenerationStream } from "./generation-stream.js";
import type { ImageSource } from "./images/image-source.js";
import type { NormalizedImage } from "./images/normalized-image.js";
import sharp from "./images/sharp.js";
import { ContentPart, type ImagePart, type Message, Messages, type PartInput, text } from "./messages.js";
import { GenerationOptions } from "./options.js";
import { parseOrThrow } from "./parse-or-throw.js";
import type { GenerateCallOptions, PictureCache } from "./prepare-generation.js";
import type { StructuredResult } from "./structured-output.js";
import type { GenerateResult } from "./protocol/messages.js";

/**
 * Options of `model.chat()`: the generation options every turn starts from (a turn's own options override them),
 * plus the conversation to start with.
 */
export const ChatOptions = GenerationOptions.extend({
  /** A system turn put first in the history (and kept by reset()): a text, or parts like user()'s. */
  system: z.union([z.string(), z.array(z.unknown())]).optional(),
  /**
   * A history to go on from, as `messages` or exportHistory() gave it (JSON.parse of a saved session works). Every
   * image part carries its source. Not with `system`: a saved history holds its own system turn.
   */
  history: z.array(z.unknown()).optional(),
});
export type ChatOptions = Omit<z.input<typeof ChatOptions>, "system" | "history"> & {
  system?: string | PartInput[];
  history?: Messages;
};

/** Options of one turn: generation options over the session's, and the turn's own signal and timeout. */
export type ChatTurnOptions = Omit<GenerateCallOptions, "images">;

/** Where a session stands against the model's context after its last answer. */
export interface ChatContextUse {
  /** Tokens the model's context holds. */
  contextTokens: number;
  /** Tokens the history took at the last answer: its prompt and the answer. */
  usedTokens: number;
  /** What remains for the next turn and its answer (the next turn's own tokens come out of it). */
  leftTokens: number;
}

/** How a turn reaches the model, beyond its messages and options. @internal */
export interface TurnExtras {
  /** The prompt and up to maxNewTokens new tokens must fit the context. */
  reserveNewTokens?: boolean;
  /** Tokens of the history at the last answer (its prompt and answer): the next prompt is at least that long. */
  usedTokens?: number;
  /** The session's decoded pictures. */
  pictures?: PictureCache;
}

type StartTurn = (messages: Messages, options: GenerateCallOptions, extras: TurnExtras) => GenerationStream;

/**
 * A conversation with the model that keeps its history, pictures included. Create with `model.chat()`.
 *
 * ```ts
 * const chat = model.chat({ system: "Answer in one sentence." });
 * for await (const delta of chat.send([image("./a.jpg"), "What is this?"])) process.stdout.write(delta);
 * const { text } = await chat.send("And its colour?");
 * await writeFile("chat.json", JSON.stringify(await chat.exportHistory()));
 * ```
 *
 * Each picture is decoded once per session, however many turns send it again. A turn is added to the history only
 * when its answer completes: an aborted, timed-out or failed turn (or a stream left early) leaves it as it was.
 */
export class ChatSession {
  readonly #start: StartTurn;
  readonly #contextTokens: () => number | null | undefined;
  readonly #defaults: GenerationOptions;
  readonly #system: Message[];
  #history: Message[];
  #pictures: PictureCache = new Map();
  #answering: GenerationStream | undefined;
  #used: number | undefined;

  /** @internal Use `model.chat()`. */
  constructor(start: StartTurn, contextTokens: () => number | null | undefined, options: ChatOptions = {}) {
    const { system, history } = parseOrThrow(ChatOptions, options, "INVALID_OPTIONS", "chat option");
    if (system !== undefined && history !== undefined) {
      throw new InvalidInputError("INVALID_OPTIONS", "Give either `system` or `history` to chat(), not both", {
        fix: "A saved history holds its own system turn: pass only `history`.",
      });
    }
    this.#start = start;
    this.#contextTokens = contextTokens;
    // The caller's own values, not the parsed ones: a turn's options are merged over them and parsed once more.
    const { system: _system, history: _history, ...given } = options;
    this.#defaults = given;
    this.#system = system === undefined ? [] : [{ role: "system", content: turnContent(system, "system") }];
    this.#history = history === undefined ? [...this.#system] : restoredHistory(history);
  }

  /** The conversation so far, system turn first, as messages for generate(): a copy, safe to keep. */
  get messages(): Messages {
    return this.#history.map((message) => ({ ...message, content: message.content.map((part) => ({ ...part })) }));
  }

  /** Where the session stands against the context after its last answer; undefined before it, or if the model does not say. */
  get contextUse(): ChatContextUse | undefined {
    const contextTokens = this.#contextTokens();
    if (this.#used === undefined || contextTokens === null || contextTokens === undefined) return undefined;
    return { contextTokens, usedTokens: this.#used, leftTokens: Math.max(0, contextTokens - this.#used) };
  }

  /**
   * Sends the next user turn (a text, or parts: `[image(src), "What is this?"]`) and answers it: iterate for text
   * deltas, or await for the result. The turn and the answer join the history when the answer completes. The
   * whole conversation and up to `maxNewTokens` new tokens must fit the model's context, else the turn is refused
   * with CONTEXT_OVERFLOW saying how many tokens it needs and how many are left. One turn at a time: a turn sent
   * while another is being answered is refused.
   */
  send<const O extends ChatTurnOptions = ChatTurnOptions>(
    content: string | PartInput[],
    options?: O,
  ): GenerationStream<StructuredResult<O>> {
    let turn: Message;
    try {
      if (this.#answering) {
        throw new InvalidInputError("INVALID_MESSAGES", "The previous turn is still being answered", {
          fix: "Await the previous send() (or abort it) before sending the next turn.",
        });
      }
      turn = { role: "user", content: turnContent(content, "turn") };
      if (options !== undefined && (typeof options !== "object" || options === null)) {
        throw new InvalidInputError(
          "INVALID_OPTIONS",
          `A turn's options must be an object (got ${options === null ? "null" : typeof options})`,
          {
            fix: "Pass the turn's options as an object, e.g. { maxNewTokens: 100 }, or leave them out.",
          },
        );
      }
    } catch (error) {
      // Refused before anything is sent: the stream's result is the refusal, like any other failed turn.
      return new GenerationStream<StructuredResult<O>>(() => Promise.reject(error));
    }
    const messages = [...this.#history, turn];
    const merged = { ...this.#defaults, ...((options === undefined ? {} : options) as GenerateCallOptions) };
    const answer = this.#start(messages, merged, {
      reserveNewTokens: true,
      usedTokens: this.#used,
      pictures: this.#pictures,
    }) as GenerationStream<StructuredResult<O>>;
    this.#answering = answer;
    answer.result.then(
      (result) => this.#answered(messages, result, answer),
      () => this.#answered(undefined, undefined, answer),
    );
    return answer;
  }

  /** Forgets every turn (the system turn stays) and every decoded picture. */
  reset(): void {
    this.#history = [...this.#system];
    this.#pictures = new Map();
    this.#used = undefined;
  }

  /**
   * The history as plain JSON-safe messages, each picture embedded as a PNG `data:` URL of the pixels the model saw
   * (lossless), so `model.chat({ history: JSON.parse(JSON.stringify(saved)) })` goes on with the same tokens.
   */
  async exportHistory(): Promise<Messages> {
    const history = this.messages;
    for (const message of history) {
      message.content = await Promise.all(
        message.content.map(async (part) =>
          part.type === "image" && part.source !== undefined ? { type: "image" as const, source: await this.#dataUrl(part.source) } : part,
        ),
      );
    }
    return history;
  }

  async #dataUrl(source: ImageSource): Promise<string> {
    if (typeof source === "string" && source.startsWith("data:")) return source;
    const picture = this.#pictures.get(source);
    if (!picture) {
      throw new InvalidInputError("INVALID_MESSAGES", "A picture of the history was never sent, so it cannot be exported", {
        fix: "Export after the turn that holds it has been answered.",
      });
    }
    return `data:image/png;base64,${(await pngOf(picture)).toString("base64")}`;
  }

  #answered(messages: Messages | undefined, result: GenerateResult | undefined, answer: GenerationStream<GenerateResult>): void {
    if (this.#answering === answer) this.#answering = undefined;
    if (!messages || !result) return;
    this.#history = [...messages, { role: "assistant", content: [text(result.text.trim())] }];
    this.#used = result.usage.totalTokens;
  }
}

function pngOf(picture: NormalizedImage): Promise<Buffer> {
  return sharp(picture.data, { raw: { width: picture.width, height: picture.height, channels: 3 } })
    .png()
    .toBuffer();
}

// A turn's parts as user() would make them; every picture must come with its source, as the session keeps it.
function turnContent(content: unknown, what: "turn" | "system"): Message["content"] {
  const parts = typeof content === "string" ? [content] : content;
  const parsed = parseOrThrow(
    z.array(z.union([z.string().transform((value) => text(value)), ContentPart])).min(1, "give at least one part"),
    parts,
    "INVALID_MESSAGES",
    what === "turn" ? "chat turn" : "system turn",
  );
  if (parsed.some((part) => part.type === "image" && part.source === undefined)) {
    throw new InvalidInputError("INVALID_MESSAGES", `An image part of the ${what} has no source`, {
      fix: "Write image(pathOrUrlOrBytes): a session keeps each picture with its turn.",
    });
  }
  return parsed;
}

function restoredHistory(history: unknown[]): Message[] {
  const parsed = parseOrThrow(Messages, history, "INVALID_MESSAGES", "chat history");
  const missing = parsed.some((message) =>
    message.content.some((part): part is ImagePart => part.type === "image" && part.source === undefined),
  );
  if (missing) {
    throw new InvalidInputError("INVALID_MESSAGES", "An image part of the history has no source", {
      fix: "Restore a history that exportHistory() gave: each picture is embedded as a data: URL.",
    });
  }
  return parsed;
}

import type { ImageSource } from "../images/image-source.js";
import { type Message, Messages } from "../messages.js";
import { GenerateResult } from "../protocol/messages.js";
import { picturePng } from "./picture-png.js";
import { escapeMarkdown, resultMarkdown } from "./result-table.js";
import { type NotebookDisplay, tslabDisplay } from "./tslab-display.js";

/** Where `display` writes; tslab's own display by default. */
export interface DisplayOptions {
  /** A display to write to instead of tslab's (for other kernels, or tests). */
  target?: NotebookDisplay;
  /** Pictures for image parts without a source, in order (as `generate`'s `images` option). */
  images?: readonly ImageSource[];
}

/** Whether this process is a tslab notebook kernel, where `display` shows things. */
export function inNotebook(): boolean {
  return tslabDisplay() !== undefined;
}

/**
 * Shows a generation result (the answer, then usage and timings as a table) or a conversation (each turn, with
 * its pictures as images) in a tslab notebook. Outside a notebook it does nothing.
 */
export async function display(value: GenerateResult | Message[], options: DisplayOptions = {}): Promise<void> {
  const target = options.target ?? tslabDisplay();
  if (target === undefined) return;
  const result = GenerateResult.safeParse(value);
  if (result.success) {
    target.markdown(resultMarkdown(result.data));
    return;
  }
  const conversation = Messages.safeParse(value);
  if (!conversation.success) {
    throw new TypeError("display() takes a generation result or a conversation (an array of messages)");
  }
  await showConversation(conversation.data, target, options.images ?? []);
}

async function showConversation(messages: Message[], target: NotebookDisplay, images: readonly ImageSource[]): Promise<void> {
  let unsourced = 0;
  for (const message of messages) {
    const role = `${message.role[0]?.toUpperCase()}${message.role.slice(1)}`;
    const words = message.content.map((part) => (part.type === "text" ? part.text : "")).join("");
    target.markdown(`**${role}:** ${escapeMarkdown(words.trim())}`);
    for (const part of message.content) {
      if (part.type !== "image") continue;
      const source = part.source ?? images[unsourced++];
      if (source !== undefined) target.png(await picturePng(source));
    }
  }
}

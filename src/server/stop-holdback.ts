import type { FinishReason } from "../protocol/messages.js";

/**
 * The content of an answer as OpenAI's API gives it: cut where the stop string that ended it begins (the SDK's
 * text keeps the stop string, and whatever followed it in the last token). While streaming, text is held back as
 * long as a stop string could still begin in it, so no chunk ever carries part of one. @internal
 */
export class StopHoldback {
  readonly #stops: string[];
  // A stop string that completes in the next delta began at most this many characters before it.
  readonly #reach: number;
  #text = "";
  #sent = 0;

  constructor(stops: string[]) {
    this.#stops = stops;
    this.#reach = stops.length === 0 ? 0 : Math.max(...stops.map((stop) => stop.length)) - 1;
  }

  /** Adds a delta; returns the text that may be sent now (possibly empty). */
  push(delta: string): string {
    // Without stop strings everything goes at once. With them, only text before the latest delta, less the reach
    // of a stop string ending in that delta (generation stops at the token that completes one).
    let end = this.#stops.length === 0 ? this.#text.length + delta.length : this.#text.length - this.#reach;
    this.#text += delta;
    // Never split a surrogate pair between two chunks: each chunk must be well-formed on its own.
    if (end > 0 && isHighSurrogate(this.#text.charCodeAt(end - 1))) end -= 1;
    if (end <= this.#sent) return "";
    const piece = this.#text.slice(this.#sent, end);
    this.#sent = end;
    return piece;
  }

  /** The answer's whole content, what is left to send of it, and what was cut off its end, from the result's text. */
  finish(text: string, finishReason: FinishReason): { content: string; rest: string; cut: string } {
    const { content, cut } = cutAtStopString(text, finishReason, this.#stops);
    return { content, rest: content.length > this.#sent ? content.slice(this.#sent) : "", cut };
  }
}

/**
 * The text up to where the stop string that ended it begins, and the rest (`cut`: the stop string and what followed
 * it in its token). Generation stops at the first token that completes a stop string, so the first occurrence of
 * any is the one. @internal
 */
export function cutAtStopString(text: string, finishReason: FinishReason, stops: string[]): { content: string; cut: string } {
  if (finishReason !== "stop_string") return { content: text, cut: "" };
  const starts = stops.map((stop) => text.indexOf(stop)).filter((index) => index !== -1);
  if (starts.length === 0) return { content: text, cut: "" };
  const start = Math.min(...starts);
  return { content: text.slice(0, start), cut: text.slice(start) };
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

import { z } from "zod";
import { ImageSource } from "./images/image-source.js";
import { WellFormedString } from "./protocol/option-ranges.js";

// The blog's message structure: {role, content: [{type: "image"} | {type: "text", text}]}.
// An image part may also carry its source; without one, images are passed beside the messages, in order.

export const ImagePart = z.strictObject({
  type: z.literal("image"),
  source: ImageSource.optional(),
});
export type ImagePart = z.infer<typeof ImagePart>;

// The text goes to the tokenizer, so it must be well-formed Unicode (no lone surrogate).
export const TextPart = z.strictObject({ type: z.literal("text"), text: WellFormedString });
export type TextPart = z.infer<typeof TextPart>;

export const ContentPart = z.discriminatedUnion("type", [ImagePart, TextPart]);
export type ContentPart = z.infer<typeof ContentPart>;

export const Role = z.enum(["user", "assistant", "system"]);
export type Role = z.infer<typeof Role>;

export const Message = z.strictObject({
  role: Role,
  content: z.array(ContentPart).min(1, "a message needs at least one content part"),
});
export type Message = z.infer<typeof Message>;

export const Messages = z.array(Message).min(1, "give at least one message");
export type Messages = z.infer<typeof Messages>;

/** Anything a builder accepts as a part: plain strings become text parts. */
export type PartInput = string | ContentPart;

/** A text part. */
export function text(value: string): TextPart {
  return { type: "text", text: value };
}

/** An image part; with a source (path, URL, bytes, sharp instance) or, as the blog does, without one. */
export function image(source?: ImageSource): ImagePart {
  return source === undefined ? { type: "image" } : { type: "image", source };
}

/** A user turn: `user(image("./a.jpg"), "What is this?")`. */
export function user(...parts: PartInput[]): Message {
  return message("user", parts);
}

/** An assistant turn, for earlier answers in a conversation. */
export function assistant(...parts: PartInput[]): Message {
  return message("assistant", parts);
}

/** A system turn. */
export function system(...parts: PartInput[]): Message {
  return message("system", parts);
}

function message(role: Role, parts: PartInput[]): Message {
  return { role, content: parts.map((part) => (typeof part === "string" ? text(part) : { ...part })) };
}

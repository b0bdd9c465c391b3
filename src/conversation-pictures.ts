import { InvalidInputError } from "./errors.js";
import type { ImageSource } from "./images/image-source.js";
import type { ImagePart, Messages } from "./messages.js";

/**
 * The pictures of a conversation, in order: those its image parts hold, or the `images` given beside them (the
 * blog's way). Never both, and exactly one per image part, else INVALID_MESSAGES saying which.
 */
export function conversationPictures(messages: Messages, images: ImageSource[] | undefined): ImageSource[] {
  const parts = messages.flatMap((message) => message.content.filter((part): part is ImagePart => part.type === "image"));
  const withSource = parts.filter((part) => part.source !== undefined);
  if (images !== undefined) {
    if (withSource.length > 0) {
      throw new InvalidInputError("INVALID_MESSAGES", "Images were given both on image parts and in the `images` option", {
        fix: "Either write image(source) in the messages or pass `images` beside them, not both.",
      });
    }
    if (images.length !== parts.length) {
      throw new InvalidInputError(
        "INVALID_MESSAGES",
        `The messages have ${parts.length} image part${parts.length === 1 ? "" : "s"} but ${images.length} image${images.length === 1 ? " was" : "s were"} given`,
        { fix: "Give exactly one image per image() part, in order." },
      );
    }
    return images;
  }
  if (withSource.length !== parts.length) {
    throw new InvalidInputError(
      "INVALID_MESSAGES",
      `${parts.length - withSource.length} of ${parts.length} image parts have no source and no \`images\` were given`,
      { fix: "Write image(pathOrUrlOrBytes) in the messages, or pass the pictures in order as the `images` option." },
    );
  }
  return withSource.map((part) => part.source as ImageSource);
}

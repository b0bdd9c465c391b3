import type { ImageSource } from "./images/image-source.js";
import { loadPictures, type LoadPicturesBounds } from "./images/load-pictures.js";
import type { NormalizedImage } from "./images/normalized-image.js";
import { Messages } from "./messages.js";
import { conversationPictures } from "./conversation-pictures.js";
import { GenerateCallOptionsSchema, type GenerationOptions, type ImageLimits } from "./options.js";
import { parseOrThrow } from "./parse-or-throw.js";
import { checkSignal } from "./worker/check-call-options.js";
import type { GenerateParams, WireMessage } from "./protocol/messages.js";
import { resolveStructure, type Structure, type StructureOptions } from "./structured-output.js";

/**
 * Options of generate() and stream(): generation options plus the call's images, signal and timeout, and at most one
 * of the structured-output options `schema`, `choices`, `regex`.
 */
export type GenerateCallOptions = GenerationOptions &
  StructureOptions & {
    /** The pictures for the conversation's image parts, in order, as the blog passes them beside the messages. */
    images?: ImageSource[];
    /** Aborts the call: it rejects with AbortError at once, picture downloads close, generation stops before the next token. */
    signal?: AbortSignal;
    /** Rejects with TimeoutError and cancels the call after this many milliseconds, loading its pictures included. */
    timeoutMs?: number;
  };

export interface PreparedGeneration {
  params: GenerateParams;
  /** The pictures' pixels in order, sent one after another as the request's payload (never copied into one). */
  payload: Buffer[];
  /** The payload's length in bytes. */
  payloadBytes: number;
  /** The call's structured output, which turns the result's text into `object`. */
  structure: Structure | undefined;
}

/**
 * Decoded pictures by source, kept by a chat session so each picture is decoded once however many turns send it:
 * a string source by its text, any other (Buffer, URL, sharp instance) by identity.
 */
export type PictureCache = Map<ImageSource, NormalizedImage>;

/** How a call is sent beyond its messages and options. */
export interface PrepareMode {
  /** Tokens are streamed back as they come. */
  stream: boolean;
  /** The prompt and up to maxNewTokens new tokens must fit the context (a chat turn), not only the prompt. */
  reserveNewTokens?: boolean;
  /** Pictures already decoded are taken from here, and new ones kept here. */
  pictures?: PictureCache;
}

// Validates everything and decodes every image before anything reaches the worker.
export async function prepareGeneration(
  messages: Messages,
  options: GenerateCallOptions,
  limits: ImageLimits,
  mode: PrepareMode,
): Promise<PreparedGeneration> {
  const parsedMessages = parseOrThrow(Messages, messages, "INVALID_MESSAGES", "messages");
  // One schema for the whole options object: `null`, `images: "a"` or a bad timeout is INVALID_OPTIONS, not a TypeError.
  const {
    images,
    signal: given,
    timeoutMs,
    schema,
    choices,
    regex,
    ...parsedOptions
  } = parseOrThrow(GenerateCallOptionsSchema, options, "INVALID_OPTIONS", "generation option");
  const structure = resolveStructure({ schema, choices, regex, minNewTokens: parsedOptions.minNewTokens } as StructureOptions);
  const signal = checkSignal(given);
  const sources = conversationPictures(parsedMessages, images as ImageSource[] | undefined);
  // The call's signal and timeout cover its pictures, downloads included.
  const decoded = await decodePictures(sources, limits, { signal, timeoutMs }, mode.pictures);

  let offset = 0;
  const wireImages = decoded.map((picture) => {
    const entry = { offset, length: picture.data.length, width: picture.width, height: picture.height };
    offset += picture.data.length;
    return entry;
  });
  return {
    params: {
      messages: parsedMessages.map(toWire),
      images: wireImages,
      options: {
        maxNewTokens: parsedOptions.maxNewTokens,
        minNewTokens: parsedOptions.minNewTokens ?? null,
        doSample: parsedOptions.doSample ?? null,
        temperature: parsedOptions.temperature ?? null,
        topP: parsedOptions.topP ?? null,
        topK: parsedOptions.topK ?? null,
        repetitionPenalty: parsedOptions.repetitionPenalty ?? null,
        noRepeatNgramSize: parsedOptions.noRepeatNgramSize ?? null,
        numBeams: parsedOptions.numBeams ?? null,
        seed: parsedOptions.seed ?? null,
        stopStrings: parsedOptions.stopStrings ?? null,
        grammar: structure?.grammar ?? null,
      },
      stream: mode.stream,
      reserveNewTokens: mode.reserveNewTokens ?? false,
    },
    payload: decoded.map((picture) => picture.data),
    payloadBytes: offset,
    structure,
  };
}

async function decodePictures(
  sources: ImageSource[],
  limits: ImageLimits,
  bounds: LoadPicturesBounds,
  cache: PictureCache | undefined,
): Promise<NormalizedImage[]> {
  if (!cache) return loadPictures(sources, limits, bounds);
  const missing = [...new Set(sources.filter((source) => !cache.has(source)))];
  const loaded = await loadPictures(missing, limits, bounds);
  for (const [index, source] of missing.entries()) cache.set(source, loaded[index] as NormalizedImage);
  return sources.map((source) => cache.get(source) as NormalizedImage);
}

function toWire(message: Messages[number]): WireMessage {
  return {
    role: message.role,
    content: message.content.map((part) =>
      part.type === "image" ? { type: "image" as const } : { type: "text" as const, text: part.text },
    ),
  };
}

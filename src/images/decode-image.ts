import type { Metadata, Sharp, SharpOptions } from "sharp";
import sharp from "./sharp.js";
import { ImageError } from "../errors.js";
import { cmykToRgb } from "./cmyk-to-rgb.js";
import { gifFrameToRgb } from "./gif-frame-to-rgb.js";
import { gray16ToRgb } from "./gray16-to-rgb.js";
import type { NormalizedImage } from "./normalized-image.js";
import { readGifFrame } from "./read-gif-frame.js";
import { sniffFormat } from "./sniff-format.js";
import { throwIfAborted } from "./throw-if-aborted.js";

type RawRgb = Pick<NormalizedImage, "data" | "width" | "height">;

// The raster formats both sharp and PIL read; SVG and the rest are refused, as the reference cannot load them.
const SUPPORTED_FORMATS = new Set(["jpeg", "png", "webp", "gif", "tiff", "heif"]);

const INPUT_OPTIONS: SharpOptions = {
  // PIL's convert("RGB") ignores embedded ICC profiles; sharp would otherwise convert through them to sRGB.
  ignoreIcc: true,
  // exif_transpose: the EXIF Orientation tag (JPEG, PNG eXIf, WebP) is applied before anything else.
  autoOrient: true,
  // The first frame of an animated GIF or WebP, as PIL.Image.open gives.
  pages: 1,
  page: 0,
  // PIL refuses truncated and corrupt data but decodes past libjpeg warnings (extraneous bytes and the like).
  failOn: "error",
};

/**
 * Decodes encoded bytes to the RGB pixels `transformers.image_utils.load_image` gives, after refusing images
 * larger than `maxPixels` from their header alone. A sharp instance is the caller's own pipeline: its output
 * is only converted to 8-bit sRGB without alpha.
 */
export async function decodeImage(
  input: Buffer | Sharp,
  source: string,
  maxPixels: number,
  signal?: AbortSignal,
): Promise<NormalizedImage> {
  const bytes = Buffer.isBuffer(input) ? input : undefined;
  const open = (): Sharp => (bytes ? sharp(bytes, { ...INPUT_OPTIONS, limitInputPixels: maxPixels }) : (input as Sharp).clone());

  let metadata: Metadata;
  try {
    metadata = await (bytes ? sharp(bytes, { ...INPUT_OPTIONS, limitInputPixels: false }) : open()).metadata();
  } catch (error) {
    const claimed = bytes && sniffFormat(bytes);
    const what = claimed ? `it looks like ${claimed} but sharp cannot read it` : "not an image format sharp recognises";
    throw unreadable(`Cannot read ${source}: ${what} (${firstLine(messageOf(error))})`, error);
  }
  const format = metadata.format ?? "unknown";
  if (bytes && !SUPPORTED_FORMATS.has(format)) {
    throw new ImageError("IMAGE_UNREADABLE", `Cannot read ${source}: sharp sees ${format}, which is not a supported raster format`, {
      fix: `Convert it to ${[...SUPPORTED_FORMATS].join(", ")}.`,
    });
  }
  // The first frame's size: the frame loadImage decodes.
  const height = metadata.pageHeight ?? metadata.height;
  if (metadata.width * height > maxPixels) throw tooLarge(source, format, metadata.width, height, maxPixels);
  throwIfAborted(signal);

  let rendered: RawRgb;
  try {
    rendered = await render(open(), metadata, bytes);
  } catch (error) {
    if (/pixel limit/i.test(messageOf(error))) throw tooLarge(source, format, metadata.width, height, maxPixels);
    throw unreadable(`Cannot decode ${source} (${format}): ${firstLine(messageOf(error))}`, error);
  }
  throwIfAborted(signal);
  if (rendered.data.length !== rendered.width * rendered.height * 3) {
    throw unreadable(`Cannot decode ${source} (${format}): got ${rendered.data.length} bytes for ${rendered.width}×${rendered.height} RGB`);
  }
  return { ...rendered, format, source };
}

// Picks the conversion that gives PIL's pixels for this kind of image.
async function render(image: Sharp, metadata: Metadata, bytes: Buffer | undefined): Promise<RawRgb> {
  if (bytes && metadata.space === "cmyk") {
    // Keep the decoded CMYK samples untouched, then convert with PIL's formula instead of an ICC transform.
    const { data, info } = await image.pipelineColourspace("cmyk").toColourspace("cmyk").raw().toBuffer({ resolveWithObject: true });
    return { data: cmykToRgb(data, info.width * info.height), width: info.width, height: info.height };
  }
  if (bytes && isPilI16(bytes, metadata)) {
    const { data, info } = await image.toColourspace("grey16").raw({ depth: "ushort" }).toBuffer({ resolveWithObject: true });
    return { data: gray16ToRgb(data, info.width * info.height, info.channels), width: info.width, height: info.height };
  }
  if (bytes && metadata.format === "gif") {
    const { data, info } = await image.ensureAlpha().toColourspace("srgb").raw().toBuffer({ resolveWithObject: true });
    const frame = readGifFrame(bytes);
    if (frame && frame.screenWidth === info.width && frame.screenHeight === info.height) {
      return { data: gifFrameToRgb(data, info.width, info.height, frame), width: info.width, height: info.height };
    }
    const rgb = await sharp(data, { raw: { width: info.width, height: info.height, channels: 4 } })
      .removeAlpha()
      .raw()
      .toBuffer();
    return { data: rgb, width: info.width, height: info.height };
  }
  // Alpha is dropped, not composited; grayscale and palettes expand to RGB; 16-bit RGB keeps its high byte.
  const { data, info } = await image.removeAlpha().toColourspace("srgb").raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

// 16-bit grayscale without an alpha channel (a PNG tRNS colour still counts) is PIL's mode I;16.
function isPilI16(bytes: Buffer, metadata: Metadata): boolean {
  if (metadata.space !== "grey16") return false;
  const PNG_COLOR_TYPE_OFFSET = 25;
  return metadata.channels === 1 || (metadata.format === "png" && bytes[PNG_COLOR_TYPE_OFFSET] === 0);
}

function tooLarge(source: string, format: string, width: number, height: number, maxPixels: number): ImageError {
  return new ImageError(
    "IMAGE_TOO_LARGE",
    `${source} (${format}) is ${width}×${height} = ${width * height} pixels, more than the \`maxPixels\` limit of ${maxPixels}`,
    { fix: "Raise the `maxPixels` option, or use a smaller image." },
  );
}

function unreadable(message: string, cause?: unknown): ImageError {
  return new ImageError("IMAGE_UNREADABLE", message, {
    cause,
    fix: "Check that the file is a complete JPEG, PNG, WebP, GIF, TIFF or AVIF image.",
  });
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function firstLine(text: string): string {
  return text.trim().split("\n")[0] ?? "";
}

import { ImageError } from "../errors.js";
import { groupDigits, printable, printableExcerpt } from "../printable.js";

/** A string that starts with `data:` is a data URL (RFC 2397), never a path: `./data:x.png` names such a file. */
export const DATA_URL_STRING = /^data:/i;

// The media types of the formats decodeImage accepts; no media type at all (`data:;base64,…`) and
// application/octet-stream leave the format to the bytes, as for any bytes.
const IMAGE_TYPES = new Set([
  "image/jpeg",
  "image/jpg",
  "image/pjpeg",
  "image/png",
  "image/apng",
  "image/webp",
  "image/gif",
  "image/tiff",
  "image/avif",
  "image/heif",
  "image/heic",
]);
const UNDECLARED_TYPES = new Set(["", "application/octet-stream"]);
const FIX = "Pass a data URL of a JPEG, PNG, WebP, GIF, TIFF or AVIF image, such as `data:image/png;base64,iVBORw0KGgo…`.";
// Characters of a data URL its description shows after the comma: enough to recognise the format's signature.
const SHOWN_DATA = 9;
const MAX_SHOWN_HEADER = 60;

/** A data URL source, string or URL object. */
export function isDataUrl(source: string | URL): boolean {
  return source instanceof URL ? source.protocol === "data:" : DATA_URL_STRING.test(source);
}

/**
 * A data URL as error messages name it: its media type and the first characters of its data, with its length
 * (`data:image/png;base64,iVBORw0KG… (2,059 characters)`), never the whole of it.
 */
export function describeDataUrl(href: string): string {
  const comma = href.indexOf(",");
  const shown = comma === -1 ? MAX_SHOWN_HEADER : Math.min(comma + 1, MAX_SHOWN_HEADER) + SHOWN_DATA;
  if (href.length <= shown + 1) return printable(href);
  return `${printableExcerpt(href.slice(0, shown + 2), shown + 1)} (${groupDigits(href.length)} characters)`;
}

/**
 * The encoded image bytes a data URL holds (`data:[<mediatype>][;base64],<data>`, base64 or percent-encoded).
 * A media type that is not an image the package reads is refused, and so is data over `maxBytes`, from its
 * encoded length before anything is decoded. The pixel limit is checked later, from the header, as for any bytes.
 */
export function decodeDataUrl(href: string, maxBytes: number, description = describeDataUrl(href)): Buffer {
  const comma = href.indexOf(",");
  if (!DATA_URL_STRING.test(href) || comma === -1) {
    throw new ImageError("IMAGE_UNREADABLE", `Cannot read ${description}: a data URL needs a comma before its data`, {
      fix: `${FIX} A file whose name starts with \`data:\` is read as \`./data:…\`.`,
    });
  }
  const parameters = href.slice("data:".length, comma).split(";");
  const base64 = parameters.length > 1 && parameters.at(-1)?.trim().toLowerCase() === "base64";
  const mediaType = (parameters[0] ?? "").trim().toLowerCase();
  if (!IMAGE_TYPES.has(mediaType) && !UNDECLARED_TYPES.has(mediaType)) {
    const what = mediaType.startsWith("image/") ? "an image format the package does not read" : "not an image";
    throw new ImageError("IMAGE_UNREADABLE", `Cannot read ${description}: its media type ${printableExcerpt(mediaType, 40)} is ${what}`, {
      fix: FIX,
    });
  }
  const data = href.slice(comma + 1);
  const bytes = base64 ? decodeBase64(data, maxBytes, description) : decodePercentEncoded(data, maxBytes, description);
  if (bytes.byteLength === 0) throw new ImageError("IMAGE_UNREADABLE", `Cannot read ${description}: it holds no data`, { fix: FIX });
  return bytes;
}

// Forgiving base64 (as browsers read data URLs): ASCII whitespace is ignored, and so is missing padding.
function decodeBase64(data: string, maxBytes: number, description: string): Buffer {
  let text = data;
  // Percent-escapes (`%2B` for `+`) and whitespace are rare: only such data is copied to remove them.
  if (text.includes("%")) text = text.replace(/%([0-9a-f]{2})/gi, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
  if (/[\t\n\f\r ]/.test(text)) text = text.replace(/[\t\n\f\r ]+/g, "");
  const body = text.length % 4 === 0 ? text.replace(/={1,2}$/, "") : text;
  // Every 4 characters are 3 bytes: the size is known before a byte is decoded.
  const size = Math.floor((body.length * 3) / 4);
  if (size > maxBytes) throw tooLarge(description, size, maxBytes);
  const bad = body.search(/[^A-Za-z0-9+/]/);
  if (bad !== -1 || body.length % 4 === 1) {
    const where = bad === -1 ? "its length is not that of base64" : `${quoteCharacter(body, bad)} at data position ${groupDigits(bad)}`;
    throw new ImageError("IMAGE_UNREADABLE", `Cannot read ${description}: its data is not valid base64 (${where})`, {
      fix: 'Encode the image\'s bytes as standard base64 (A–Z, a–z, 0–9, +, /, = padding), e.g. `Buffer.from(bytes).toString("base64")`.',
    });
  }
  return Buffer.from(body, "base64");
}

// RFC 2397 data without `;base64`: `%XX` is one byte, any other character its UTF-8 bytes.
function decodePercentEncoded(data: string, maxBytes: number, description: string): Buffer {
  const percentEscape = /%[0-9a-f]{2}/gi;
  let escapes = 0;
  while (percentEscape.exec(data) !== null) escapes += 1;
  const size = Buffer.byteLength(data, "utf8") - 2 * escapes;
  if (size > maxBytes) throw tooLarge(description, size, maxBytes);
  const bytes = Buffer.allocUnsafe(size);
  let at = 0;
  let last = 0;
  for (const found of data.matchAll(percentEscape)) {
    at += bytes.write(data.slice(last, found.index), at, "utf8");
    bytes[at++] = Number.parseInt(found[0].slice(1), 16);
    last = found.index + 3;
  }
  at += bytes.write(data.slice(last), at, "utf8");
  return bytes.subarray(0, at);
}

function quoteCharacter(text: string, index: number): string {
  const character = String.fromCodePoint(text.codePointAt(index) ?? 0);
  return `\`${printable(character)}\``;
}

function tooLarge(description: string, size: number, maxBytes: number): ImageError {
  return new ImageError("IMAGE_TOO_LARGE", `${description} holds ${size} bytes, more than the \`maxBytes\` limit of ${maxBytes}`, {
    fix: "Raise the `maxBytes` option, or use a smaller image.",
  });
}

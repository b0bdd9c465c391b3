import { isDataUrl } from "../images/data-url.js";
import { URL_STRING } from "../images/describe-source.js";
import type { ImageSource } from "../images/image-source.js";
import { LoadImageOptions } from "../images/load-image-options.js";
import { loadImage } from "../images/load-image.js";
import { loadPictures } from "../images/load-pictures.js";
import type { NormalizedImage } from "../images/normalized-image.js";
import { parseOptions } from "../images/parse-options.js";
import { readSource } from "../images/read-source.js";
import sharp from "../images/sharp.js";
import { sniffFormat } from "../images/sniff-format.js";
import type { ImageLimits } from "../options.js";
import type { PictureCache } from "../prepare-generation.js";

// Pictures for a remote server, as the URLs of OpenAI's `image_url` parts. The server must see the pixels the local
// model would: http(s) and data: URLs go as they are (the server fetches or decodes the same bytes), files and bytes
// go as data: URLs of their own bytes (unchanged), and a sharp instance as a lossless PNG of its output.

const MEDIA_TYPES: Record<string, string> = {
  jpeg: "image/jpeg",
  png: "image/png",
  gif: "image/gif",
  webp: "image/webp",
  tiff: "image/tiff",
};

/** Each picture as the URL to send, read within `limits` and the call's signal. @internal */
export async function pictureUrls(sources: ImageSource[], limits: ImageLimits, signal: AbortSignal | undefined): Promise<string[]> {
  const resolved = parseOptions(LoadImageOptions, limits, "image");
  return Promise.all(
    sources.map(async (source) => {
      if (typeof source === "string" || source instanceof URL) {
        const href = String(source);
        if (isDataUrl(source)) return href;
        if (source instanceof URL ? /^https?:$/.test(source.protocol) : URL_STRING.test(source) && /^https?:/i.test(source)) return href;
      }
      const bytes = await readSource(source, resolved, signal);
      if (Buffer.isBuffer(bytes))
        return `data:${MEDIA_TYPES[sniffFormat(bytes) ?? ""] ?? "application/octet-stream"};base64,${bytes.toString("base64")}`;
      return pngDataUrl(await loadImage(source, limits, signal));
    }),
  );
}

const pngs = new WeakMap<NormalizedImage, Promise<string>>();

/**
 * A chat session's pictures: each decoded once on this side (kept in the session's cache, so a file may be gone by
 * the next turn and exportHistory() works as it does locally), and sent as a lossless PNG of those pixels. @internal
 */
export async function sessionPictureUrls(
  sources: ImageSource[],
  limits: ImageLimits,
  cache: PictureCache,
  signal: AbortSignal | undefined,
): Promise<string[]> {
  const missing = [...new Set(sources.filter((source) => !cache.has(source)))];
  const loaded = await loadPictures(missing, limits, { signal });
  for (const [index, source] of missing.entries()) cache.set(source, loaded[index] as NormalizedImage);
  return Promise.all(sources.map((source) => pngDataUrl(cache.get(source) as NormalizedImage)));
}

function pngDataUrl(picture: NormalizedImage): Promise<string> {
  let png = pngs.get(picture);
  if (!png) {
    png = sharp(picture.data, { raw: { width: picture.width, height: picture.height, channels: 3 } })
      .png()
      .toBuffer()
      .then((bytes) => `data:image/png;base64,${bytes.toString("base64")}`);
    pngs.set(picture, png);
  }
  return png;
}

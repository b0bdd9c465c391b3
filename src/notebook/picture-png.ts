import sharp from "../images/sharp.js";
import type { ImageSource } from "../images/image-source.js";
import { loadImage } from "../images/load-image.js";

/** Longest edge of a picture shown in a notebook: enough to recognise it, small enough to keep notebooks light. */
const SHOWN_EDGE = 384;

/** A picture as the model sees it (EXIF orientation applied, alpha dropped), as a PNG no larger than SHOWN_EDGE. */
export async function picturePng(source: ImageSource): Promise<Buffer> {
  const image = await loadImage(source);
  return sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } })
    .resize({ width: SHOWN_EDGE, height: SHOWN_EDGE, fit: "inside", withoutEnlargement: true })
    .png()
    .toBuffer();
}

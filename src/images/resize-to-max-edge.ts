import sharp from "./sharp.js";
import type { NormalizedImage } from "./normalized-image.js";

/**
 * Downscales so the longest side is at most `maxEdge`, keeping the aspect ratio, with sharp's lanczos3 kernel
 * on the 8-bit sRGB values. The reference never does this, so the pixels no longer match it.
 */
export async function resizeToMaxEdge(image: NormalizedImage, maxEdge: number): Promise<NormalizedImage> {
  if (Math.max(image.width, image.height) <= maxEdge) return image;
  const { data, info } = await sharp(image.data, {
    raw: { width: image.width, height: image.height, channels: 3 },
    // The size was checked against maxPixels before decoding.
    limitInputPixels: false,
  })
    .resize({ width: maxEdge, height: maxEdge, fit: "inside", kernel: "lanczos3" })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { ...image, data, width: info.width, height: info.height };
}

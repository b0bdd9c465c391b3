import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import sharp from "sharp";

const WIDTH = 41;
const HEIGHT = 29;

// Seeded noise with alpha 0, 80 or 255: every rounding or colour-management difference shows.
export function noiseRgba(width = WIDTH, height = HEIGHT, seed = 1): Buffer {
  const pixels = Buffer.alloc(width * height * 4);
  let state = seed;
  const next = (): number => {
    state = (state * 1103515245 + 12345) & 0x7fffffff;
    return (state >> 8) & 255;
  };
  for (let index = 0; index < pixels.length; index += 1) pixels[index] = index % 4 === 3 ? [0, 80, 255][next() % 3]! : next();
  return pixels;
}

const rgba = (seed = 1) => sharp(noiseRgba(WIDTH, HEIGHT, seed), { raw: { width: WIDTH, height: HEIGHT, channels: 4 } });
const rgb = () => rgba().removeAlpha();

/** Fixtures PIL cannot write: embedded ICC profiles, 16-bit RGB, CMYK with a profile, AVIF, sharp's animations. */
export async function writeSharpFixtures(folder: string): Promise<void> {
  const file = (name: string) => join(folder, name);
  await rgb().withIccProfile("p3").png().toFile(file("sharp-p3.png"));
  await rgb().withIccProfile("p3").jpeg({ quality: 90 }).toFile(file("sharp-p3.jpg"));
  await rgb().toColourspace("rgb16").png().toFile(file("sharp-rgb16.png"));
  await rgba().toColourspace("rgb16").png().toFile(file("sharp-rgba16.png"));
  await rgba().toColourspace("grey16").png().toFile(file("sharp-graya16.png"));
  await rgb().toColourspace("cmyk").jpeg({ quality: 95 }).toFile(file("sharp-cmyk-icc.jpg"));
  await rgb().tiff().toFile(file("sharp-rgb.tiff"));
  await rgb().avif({ quality: 70 }).toFile(file("sharp-lossy.avif"));
  await rgb().avif({ lossless: true }).toFile(file("sharp-lossless.avif"));
  await rgb().jpeg({ quality: 90 }).withMetadata({ orientation: 7 }).toFile(file("sharp-orientation-7.jpg"));
  const frames = [await rgba(1).png().toBuffer(), await rgba(2).png().toBuffer()];
  await sharp(frames, { join: { animated: true } })
    .gif({ delay: [100, 100] })
    .toFile(file("sharp-animated-transparent.gif"));
  await sharp(frames, { join: { animated: true } })
    .webp({ lossless: true, delay: [100, 100] })
    .toFile(file("sharp-animated-alpha.webp"));
}

/** Writes bytes under a name, for fixtures that are not images at all. */
export async function writeBytes(folder: string, name: string, bytes: Uint8Array | string): Promise<string> {
  await writeFile(join(folder, name), bytes);
  return join(folder, name);
}

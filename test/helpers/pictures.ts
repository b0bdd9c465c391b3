import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { demoAssetsPath } from "../../src/embedded-model.js";

export const demoFirst = join(demoAssetsPath, "first.png");
export const demoSecond = join(demoAssetsPath, "second.jpg");

/** Writes a PNG of a coloured square on a light background and returns its path. */
export async function squarePicture(rgb: [number, number, number], name = "square.png"): Promise<string> {
  const path = join(mkdtempSync(join(tmpdir(), "idefics2-picture-")), name);
  const [r, g, b] = rgb;
  const square = await sharp({ create: { width: 90, height: 90, channels: 3, background: { r, g, b } } })
    .png()
    .toBuffer();
  await sharp({ create: { width: 220, height: 180, channels: 3, background: { r: 235, g: 235, b: 225 } } })
    .composite([{ input: square, left: 60, top: 40 }])
    .png()
    .toFile(path);
  return path;
}

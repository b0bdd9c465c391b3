// Two pictures of the blog's size, made here (no downloads): for the GPU benchmarks and the TTFT measurement.
// Kept apart from bench-inputs.mjs, which imports the built package, so a script timing another build can use it.
import { join } from "node:path";
import sharp from "sharp";

/** Writes two 980×735 JPEG pictures (gradients, different from each other) into `dir`; returns their paths. */
export async function blogPictures(dir) {
  const paths = [];
  for (const [index, shift] of [20, 200].entries()) {
    const raw = Buffer.alloc(980 * 735 * 3);
    for (let y = 0; y < 735; y++) {
      for (let x = 0; x < 980; x++) {
        const o = (y * 980 + x) * 3;
        raw[o] = (x * 255) / 980;
        raw[o + 1] = (y * 255) / 735;
        raw[o + 2] = (shift + x + y) % 256;
      }
    }
    const path = join(dir, `picture-${index}.jpg`);
    await sharp(raw, { raw: { width: 980, height: 735, channels: 3 } })
      .jpeg({ quality: 90 })
      .toFile(path);
    paths.push(path);
  }
  return paths;
}

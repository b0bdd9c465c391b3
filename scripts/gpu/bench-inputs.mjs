// What the GPU benchmarks share: the blog's conversation and two pictures of its size, a child process's stdout,
// the card's name, and small number helpers. Imported by benchmark-gpu.mjs and bench-devices.mjs.
import { spawn } from "node:child_process";
import { join } from "node:path";
import sharp from "sharp";
import { assistant, image, user } from "../../dist/index.js";

/** The blog's conversation: a picture and its answer, then a second picture and the question which city it is. */
export const blogMessages = [
  user(image(), "What do we see in this image?"),
  assistant("In this image, we can see the city of New York, and more specifically the Statue of Liberty."),
  user(image(), "And how about this image? Which city is that?"),
];

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

/** Runs a program and resolves with its stdout; rejects with the end of its stderr when it exits non-zero. */
export function run(file, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr = (stderr + chunk).slice(-20_000)));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(stdout) : reject(new Error(`${file} exited ${code}: ${stderr.slice(-3000)}`))));
  });
}

/** nvidia-smi's name, memory and driver of each card, or "no GPU". */
export async function gpuName() {
  return (await run("nvidia-smi", ["--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]).catch(() => "no GPU")).trim();
}

/** The first index where two token lists differ, or null when they are equal. */
export function firstDivergence(a, b) {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? null : length;
}

export function round(value, digits) {
  return Math.round(value * 10 ** digits) / 10 ** digits;
}

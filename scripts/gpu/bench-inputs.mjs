// What the GPU benchmarks share: the blog's conversation and two pictures of its size, the SDK's load options per
// quantization, a child process's stdout, the card's name, and small number helpers. Imported by benchmark-gpu.mjs,
// bench-devices.mjs, measure-ttft.mjs and concurrent-requests.mjs.
import { spawn } from "node:child_process";
import { assistant, image, user } from "../../dist/index.js";

export { blogPictures } from "./blog-pictures.mjs";

/** The blog's conversation: a picture and its answer, then a second picture and the question which city it is. */
export const blogMessages = [
  user(image(), "What do we see in this image?"),
  assistant("In this image, we can see the city of New York, and more specifically the Statue of Liberty."),
  user(image(), "And how about this image? Which city is that?"),
];

/** `Idefics2.load` options per quantization as the benchmarks name them: the blog's settings (4-bit is nf4). */
export const sdkLoadOptions = {
  bf16: { quantization: "none", dtype: "bfloat16" },
  "8bit": { quantization: "8bit" },
  "4bit": { quantization: { mode: "4bit", quantType: "nf4" } },
};

/** The load options for `quantization`, or an error naming the ones there are. */
export function loadOptionsFor(quantization) {
  const options = sdkLoadOptions[quantization];
  if (!options) throw new Error(`quantization must be bf16, 8bit or 4bit (got ${quantization})`);
  return options;
}

/** `Idefics2.load`'s options for a benchmark of the blog's work: the model on the GPU, splitting on, `quantization`. */
export function blogLoadOptions(model, python, quantization) {
  return { model, python, deviceMap: "auto", imageSplitting: true, ...loadOptionsFor(quantization) };
}

/** Runs scripts/gpu/bench_reference.py (the blog's program, timed) and resolves with its JSON result. */
export async function runReference({ python, model, messagesFile, images, quantization, newTokens, splittings }) {
  const script = new URL("./bench_reference.py", import.meta.url).pathname;
  const args = [script, "--model", model, "--messages", messagesFile];
  for (const picture of images) args.push("--image", picture);
  args.push("--quantization", quantization, "--new-tokens", String(newTokens));
  for (const splitting of splittings) args.push("--splitting", splitting);
  return JSON.parse(await run(python, args));
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

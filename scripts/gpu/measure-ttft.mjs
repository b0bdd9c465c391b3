#!/usr/bin/env node
// Time to first token through the SDK, many calls (the end-to-end benchmark times one): per quantization, a fresh
// worker, two 2-token warm-up calls, then N one-token calls of the benchmark's blog request (two 980×735 JPEG
// pictures, splitting on). Prints one JSON line per quantization: median / min / max of the wall time from Node and
// of the worker's own preprocess and prefill. Needs `npm run build` first (it imports dist/).
//
// node scripts/gpu/measure-ttft.mjs --model /tmp/i8b --python "$(command -v python3)" [--runs 10] 4bit 8bit bf16
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Idefics2 } from "../../dist/index.js";
import { blogLoadOptions, blogMessages, blogPictures } from "./bench-inputs.mjs";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { model: { type: "string" }, python: { type: "string" }, runs: { type: "string", default: "10" } },
});
if (!values.model) throw new Error("--model is required (a checkpoint folder)");
const summary = (samples) => {
  const sorted = [...samples].sort((a, b) => a - b);
  const round = (value) => Math.round(value * 10) / 10;
  return { median: round(sorted[Math.floor(sorted.length / 2)]), min: round(sorted[0]), max: round(sorted.at(-1)) };
};
const images = await blogPictures(mkdtempSync(join(tmpdir(), "ttft-")));
for (const quantization of positionals.length ? positionals : ["bf16", "8bit", "4bit"]) {
  const model = await Idefics2.load(blogLoadOptions(values.model, values.python, quantization));
  try {
    const once = { images, maxNewTokens: 1, minNewTokens: 1 };
    for (let i = 0; i < 2; i++) await model.generate(blogMessages, { ...once, maxNewTokens: 2, minNewTokens: 2 });
    const wall = [];
    const preprocess = [];
    const prefill = [];
    for (let i = 0; i < Number(values.runs); i++) {
      const started = performance.now();
      const result = await model.generate(blogMessages, once);
      wall.push(performance.now() - started);
      preprocess.push(result.timings.preprocessMs);
      prefill.push(result.timings.prefillMs);
    }
    const line = { quantization, ttftMs: summary(wall), workerPreprocessMs: summary(preprocess), workerPrefillMs: summary(prefill) };
    console.log(JSON.stringify(line));
  } finally {
    await model.close();
  }
}

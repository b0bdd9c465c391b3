#!/usr/bin/env node
// Load time, the reference program against the SDK, in alternated pairs: one process's imports move by seconds
// between processes on the same machine (BENCHMARKS.md, H16 and H35), so one pair cannot say which side is faster.
// Per pair and quantization: the reference (bench_reference.py with 2 new tokens: its importS from the process's
// start, its loadS for processor + model with CUDA's setup) and the SDK (`Idefics2.load` to ready, a fresh worker,
// with the steps it reports), the order swapped every other pair. Prints one JSON line per pair and a summary line
// per quantization (medians, the mean SDK − reference difference, and how many pairs the SDK was ready first).
// With --cold, every SDK load gets a new empty home: a machine's first load (no probe cache, no bytecode folder for an
// interpreter without bytecode). Needs `npm run build` first.
//
// node scripts/gpu/load-pairs.mjs --model /tmp/i8b --python "$(command -v python3)" [--pairs 3] [--cold] 4bit [8bit bf16]
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Idefics2 } from "../../dist/index.js";
import { blogLoadOptions, blogMessages, blogPictures, round, runReference } from "./bench-inputs.mjs";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    model: { type: "string" },
    python: { type: "string" },
    pairs: { type: "string", default: "3" },
    cold: { type: "boolean", default: false },
  },
});
if (!values.model || !values.python) throw new Error("--model (a checkpoint folder) and --python are required");
const folder = mkdtempSync(join(tmpdir(), "load-pairs-"));
const images = await blogPictures(folder);
const messagesFile = join(folder, "messages.json");
writeFileSync(messagesFile, JSON.stringify(blogMessages));
const median = (samples) => {
  const sorted = [...samples].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return round(sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2, 2);
};

async function reference(quantization) {
  const { python, model } = values;
  const { importS, loadS } = await runReference({ python, model, messagesFile, images, quantization, newTokens: 2, splittings: ["on"] });
  return { importS, loadS, totalS: round(importS + loadS, 1) };
}

async function sdk(quantization) {
  const started = performance.now();
  const steps = [];
  const model = await Idefics2.load({
    ...blogLoadOptions(values.model, values.python, quantization),
    ...(values.cold ? { home: mkdtempSync(join(tmpdir(), "load-pairs-home-")) } : {}),
    onProgress: (event) => {
      if (event.type === "stage") steps.push([event.message, round(event.elapsedMs / 1000, 2)]);
    },
  });
  const totalS = round((performance.now() - started) / 1000, 1);
  await model.close();
  return { totalS, steps };
}

for (const quantization of positionals.length ? positionals : ["4bit"]) {
  const pairs = [];
  for (let pair = 0; pair < Number(values.pairs); pair++) {
    const sdkFirst = pair % 2 === 1;
    let ref;
    let ours;
    if (sdkFirst) {
      ours = await sdk(quantization);
      ref = await reference(quantization);
    } else {
      ref = await reference(quantization);
      ours = await sdk(quantization);
    }
    pairs.push({ ref, ours });
    console.log(JSON.stringify({ quantization, pair: pair + 1, first: sdkFirst ? "sdk" : "reference", reference: ref, sdk: ours }));
  }
  const summary = {
    quantization,
    pairs: pairs.length,
    referenceMedianS: median(pairs.map((p) => p.ref.totalS)),
    sdkMedianS: median(pairs.map((p) => p.ours.totalS)),
    sdkReadyFirst: pairs.filter((p) => p.ours.totalS <= p.ref.totalS).length,
    // SDK minus reference, averaged over the pairs: with the order swapped every other pair, the first process's
    // extra time (H36: 1-6 s) falls on each side equally often.
    meanDifferenceS: round(pairs.reduce((sum, p) => sum + p.ours.totalS - p.ref.totalS, 0) / pairs.length, 2),
  };
  console.log(JSON.stringify(summary));
}

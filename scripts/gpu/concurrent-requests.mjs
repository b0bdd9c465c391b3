#!/usr/bin/env node
// How requests sent together share the worker, through the SDK: a short text prompt (or, with --conversation blog,
// the blog's conversation and two pictures of its size), 128 new tokens each, sent 1, 8, 1, 8 and 8 at a time (or
// --counts, comma-separated). Prints one JSON line per round: its wall time and tokens per second, and for each
// request when it was sent and answered (ms from the round's start) and the worker's timings; requests admitted
// together have the same decodeMs. Needs `npm run build` first (it imports dist/).
//
// node scripts/gpu/concurrent-requests.mjs --model /tmp/i8b --python "$(command -v python3)" [--quantization bf16]
//   [--counts 1,8,1,8,8] [--conversation text|blog]
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Idefics2, user } from "../../dist/index.js";
import { blogMessages, blogPictures, loadOptionsFor } from "./bench-inputs.mjs";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    python: { type: "string" },
    quantization: { type: "string", default: "bf16" },
    "new-tokens": { type: "string", default: "128" },
    counts: { type: "string", default: "1,8,1,8,8" },
    conversation: { type: "string", default: "text" },
  },
});
if (!["text", "blog"].includes(values.conversation)) {
  throw new Error(`--conversation is text or blog, not ${values.conversation}`);
}
if (!values.model) throw new Error("--model is required (a checkpoint folder)");
const newTokens = Number(values["new-tokens"]);
const model = await Idefics2.load({
  model: values.model,
  python: values.python,
  deviceMap: "auto",
  ...loadOptionsFor(values.quantization),
});
try {
  const blog = values.conversation === "blog";
  const messages = blog ? blogMessages : [user("Write a long story about a city by the sea.")];
  const images = blog ? await blogPictures(mkdtempSync(join(tmpdir(), "idefics2-concurrent-"))) : [];
  const options = { images, minNewTokens: newTokens, maxNewTokens: newTokens };
  const counts = values.counts.split(",").map(Number);
  if (!counts.every((count) => Number.isInteger(count) && count > 0)) {
    throw new Error(`--counts takes positive whole numbers separated by commas, not ${values.counts}`);
  }
  for (const count of counts) {
    const started = performance.now();
    const requests = Array.from({ length: count }, async () => {
      const sent = Math.round(performance.now() - started);
      const result = await model.generate(messages, options);
      return { sent, done: Math.round(performance.now() - started), timings: result.timings };
    });
    const results = await Promise.all(requests);
    const wallMs = performance.now() - started;
    const tokS = Math.round((count * newTokens) / (wallMs / 1000));
    console.log(JSON.stringify({ count, wallMs: Math.round(wallMs), tokS, results }));
  }
} finally {
  await model.close();
}

#!/usr/bin/env node
// Several GPUs of one host (README "Several GPUs"): the blog's work sent as 16 concurrent requests to one worker
// (`devices: ["cuda:0"]`) and to two (`devices: ["cuda:0", "cuda:1"]`), throughput of each and their ratio (the goal
// is at least 1.8×); then one model split over both GPUs (`deviceMap: "auto"` with `maxMemory` below its size on each)
// and whether its greedy tokens equal the one-GPU model's. Prints a table, writes JSON. Needs `npm run build` first.
//
// node scripts/gpu/bench-devices.mjs --model /tmp/idefics2-8b-random --python "$(command -v python3)" \
//   [--quantization bf16|8bit|4bit] [--new-tokens 128] [--concurrent 16] [--runs 2] [--max-memory JSON] [--out FILE]
// A dry run of the same logic on the CPU with the embedded model and two CPU workers:
// node scripts/gpu/bench-devices.mjs --device-kind cpu --new-tokens 8 --concurrent 4 --runs 1
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Idefics2 } from "../../dist/index.js";
import { blogMessages, blogPictures, firstDivergence, gpuName, loadOptionsFor, round } from "./bench-inputs.mjs";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    python: { type: "string" },
    quantization: { type: "string", default: "bf16" },
    "new-tokens": { type: "string", default: "128" },
    concurrent: { type: "string", default: "16" },
    runs: { type: "string", default: "2" },
    "device-kind": { type: "string", default: "cuda" },
    "max-memory": { type: "string" },
    out: { type: "string" },
  },
});
const quantized = loadOptionsFor(values.quantization);
if (values["device-kind"] !== "cuda" && values["device-kind"] !== "cpu") throw new Error("--device-kind must be cuda or cpu");
const cuda = values["device-kind"] === "cuda";
const newTokens = Number(values["new-tokens"]);
const concurrent = Number(values.concurrent);
const runs = Number(values.runs);
const log = (message) => process.stderr.write(`[bench-devices] ${message}\n`);

const images = await blogPictures(mkdtempSync(join(tmpdir(), "idefics2-bench-devices-")));
// Every request does the same work: exactly `newTokens` new tokens, greedy.
const fixed = { images, minNewTokens: newTokens, maxNewTokens: newTokens };
// A stop string that never occurs sends a call through transformers' generate(), the decoder a model split over
// devices uses: the one-GPU model's tokens by the same algorithm.
const throughGenerate = { ...fixed, stopStrings: ["§never§stop§"] };
const common = {
  ...(values.model ? { model: values.model } : {}),
  ...(values.python ? { python: values.python } : {}),
  ...quantized,
  onStderr: (line) => process.stderr.write(`  worker: ${line}\n`),
};

const report = {
  card: await gpuName(),
  date: new Date().toISOString(),
  settings: {
    quantization: values.quantization,
    new_tokens: newTokens,
    concurrent,
    runs,
    device_kind: values["device-kind"],
    work: "the blog's conversation, 2 × 980×735 JPEG",
  },
  versions: { node: process.version },
  configs: [],
  ratio: null,
  split: null,
};
const out = values.out ?? join(tmpdir(), `idefics2-bench-devices-${report.date.slice(0, 10)}.json`);
const save = () => writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);

const one = cuda ? ["cuda:0"] : ["cpu"];
const two = cuda ? ["cuda:0", "cuda:1"] : ["cpu", "cpu"];
let reference;
for (const devices of [one, two]) {
  log(`devices ${JSON.stringify(devices)}: loading`);
  const row = await withModel({ ...common, devices }, async (model, loadS) => {
    report.versions = { ...(await model.workerInfo()).versions, node: process.version };
    // Warm-up: every worker, every batch size the measured runs reach (the fast decoder captures CUDA graphs).
    await Promise.all(Array.from({ length: concurrent }, () => model.generate(blogMessages, { images, maxNewTokens: 4, minNewTokens: 4 })));
    const single = await model.generate(blogMessages, fixed);
    const generated = devices.length === 1 ? await model.generate(blogMessages, throughGenerate) : undefined;
    const routedBefore = model.replicas.map((replica) => replica.routed);
    const tokensPerS = [];
    for (let run = 0; run < runs; run++) {
      const started = performance.now();
      const results = await Promise.all(Array.from({ length: concurrent }, () => model.generate(blogMessages, fixed)));
      const tokens = results.reduce((sum, result) => sum + result.usage.completionTokens, 0);
      tokensPerS.push(round(tokens / ((performance.now() - started) / 1000), 2));
      log(`devices ${JSON.stringify(devices)}: run ${run + 1}: ${tokensPerS.at(-1)} tok/s`);
    }
    return {
      devices,
      load_s: round(loadS, 1),
      decoder: model.info.decoder ?? "reference",
      tokens_per_s: Math.max(...tokensPerS),
      runs_tokens_per_s: tokensPerS,
      // How the measured requests were spread: each worker's share.
      routed: model.replicas.map((replica, index) => replica.routed - (routedBefore[index] ?? 0)),
      restarts: model.restarts,
      footprint_bytes: model.info.memory?.footprintBytes ?? null,
      token_ids: single.tokenIds,
      generate_token_ids: generated?.tokenIds ?? null,
    };
  });
  if (devices.length === 1) reference = row;
  report.configs.push(row);
  save();
}
const [oneRow, twoRow] = report.configs;
report.ratio = round(twoRow.tokens_per_s / oneRow.tokens_per_s, 2);
save();

// One model over both GPUs: each GPU may hold about 70% of it, so neither holds it all (or --max-memory's limits).
const footprint = reference.footprint_bytes ?? 0;
const share = `${Math.max(1, Math.ceil((footprint * 0.7) / 2 ** 20))}MiB`;
const maxMemory = values["max-memory"] ? JSON.parse(values["max-memory"]) : cuda ? { 0: share, 1: share } : { cpu: "8GiB" };
log(`deviceMap auto, maxMemory ${JSON.stringify(maxMemory)}: loading`);
report.split = await withModel({ ...common, deviceMap: "auto", maxMemory }, async (model, loadS) => {
  const result = await model.generate(blogMessages, fixed);
  const devicesSeen = (await model.workerInfo()).cuda?.devices ?? [];
  const allocatedGb = devicesSeen.map((device) => round((device.allocatedBytes ?? 0) / 1e9, 2));
  const spans = cuda ? allocatedGb.filter((gb) => gb > (footprint / 1e9) * 0.1).length >= 2 : null;
  const againstGenerate = reference.generate_token_ids;
  return {
    max_memory: maxMemory,
    load_s: round(loadS, 1),
    device: model.info.device,
    decoder: model.info.decoder ?? "reference",
    allocated_gb_per_gpu: allocatedGb,
    spans_both_gpus: spans,
    // The pass criterion: the same greedy tokens as the one-GPU model by the same algorithm (generate()).
    tokens_equal: JSON.stringify(result.tokenIds) === JSON.stringify(againstGenerate),
    first_divergence: firstDivergence(againstGenerate, result.tokenIds),
    // Also against the one-GPU model's fast decoder (equal unless a step is a near-tie between the two kernels).
    tokens_equal_fast_decoder: JSON.stringify(result.tokenIds) === JSON.stringify(reference.token_ids),
    first_divergence_fast_decoder: firstDivergence(reference.token_ids, result.tokenIds),
    token_ids: result.tokenIds,
  };
});
save();
printTable(report);
log(`wrote ${out}`);

async function withModel(options, work) {
  const started = performance.now();
  const model = await Idefics2.load(options);
  try {
    return await work(model, (performance.now() - started) / 1000);
  } finally {
    await model.close();
  }
}

function printTable({ card, settings, configs, ratio, split }) {
  process.stdout.write(
    `\n${card}\n${settings.quantization}, ${settings.concurrent} concurrent blog requests, ${settings.new_tokens} new tokens each\n\n`,
  );
  process.stdout.write("devices | decoder | load s | tok/s (best of runs) | runs | requests per worker\n");
  for (const row of configs)
    process.stdout.write(
      `${row.devices.join(",")} | ${row.decoder} | ${row.load_s} | ${row.tokens_per_s} | ${row.runs_tokens_per_s.join(" / ")} | ${row.routed.join(" / ")}\n`,
    );
  const goal = cuda ? ` — ${ratio >= 1.8 ? "PASS" : "FAIL"} (goal ≥ 1.8×)` : " (CPU dry run: no goal)";
  process.stdout.write(`\nratio, ${configs[1].devices.length} workers / 1: ${ratio}×${goal}\n`);
  process.stdout.write(
    `\nsplit model (deviceMap auto, maxMemory ${JSON.stringify(split.max_memory)}): decoder ${split.decoder}, allocated GB per GPU ${JSON.stringify(split.allocated_gb_per_gpu)}` +
      `${split.spans_both_gpus === null ? "" : `, spans both GPUs: ${split.spans_both_gpus}`}\n`,
  );
  process.stdout.write(
    `greedy tokens equal the one-GPU model's (generate()): ${split.tokens_equal ? "PASS" : `FAIL (from token ${split.first_divergence})`}; ` +
      `against its fast decoder: ${split.tokens_equal_fast_decoder ? "equal" : `differ from token ${split.first_divergence_fast_decoder}`}\n`,
  );
}

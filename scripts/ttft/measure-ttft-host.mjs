#!/usr/bin/env node
// Time to first token, the host side: the blog's request (two 980×735 JPEG pictures given as files, splitting on)
// with maxNewTokens 1, timed from Node around `model.generate`, beside the worker's own preprocess and prefill and
// the Node-side stages timed alone (reading and decoding the pictures, building the request, encoding the frame).
// The worker-side stages are timed by scripts/ttft/worker_stages.py, which this script runs on the same inputs.
// Needs `npm run build` first (it imports dist/), or `--package DIR` for another build of the package.
//
// node scripts/ttft/measure-ttft-host.mjs --python ~/.cache/idefics2/envs/<hash>/bin/python \
//   [--model assets/tiny-idefics2] [--stages-longest-edge 980] [--runs 20] [--device cpu] [--out FILE]
// The whole call runs at the model's own longest edge (the tiny model's prefill at 980 px takes seconds on a CPU);
// the worker's stages are timed at --stages-longest-edge, the real model's 980 px by default.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { blogPictures } from "../gpu/blog-pictures.mjs";

const { values } = parseArgs({
  options: {
    python: { type: "string" },
    package: { type: "string", default: new URL("../..", import.meta.url).pathname },
    model: { type: "string" },
    "stages-longest-edge": { type: "string", default: "980" },
    runs: { type: "string", default: "20" },
    device: { type: "string", default: "cpu" },
    out: { type: "string" },
  },
});
if (!values.python) throw new Error("--python is required (the interpreter of a dev environment)");
const packageDir = resolve(values.package);
const model = resolve(values.model ?? join(packageDir, "assets", "tiny-idefics2"));
const runs = Number(values.runs);
const stagesLongestEdge = Number(values["stages-longest-edge"]);
const importDist = (path) => import(pathToFileURL(join(packageDir, "dist", path)).href);
const { Idefics2, assistant, image, user } = await importDist("index.js");
const { prepareGeneration } = await importDist("prepare-generation.js");
const { encodeFrame } = await importDist("protocol/frame-codec.js");

const messages = [
  user(image(), "What do we see in this image?"),
  assistant("In this image, we can see the city of New York, and more specifically the Statue of Liberty."),
  user(image(), "And how about this image? Which city is that?"),
];
const folder = mkdtempSync(join(tmpdir(), "idefics2-ttft-"));
const pictures = await blogPictures(folder);
const imageLimits = {};

function median(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}
const summary = (samples) => ({
  median: round(median(samples)),
  min: round(Math.min(...samples)),
  max: round(Math.max(...samples)),
});
const round = (value) => Math.round(value * 100) / 100;

async function timeStage(count, body) {
  const samples = [];
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    await body();
    samples.push(performance.now() - started);
  }
  return summary(samples);
}

// Node alone: the stages of the call before its frame reaches the pipe.
const options = { images: pictures, maxNewTokens: 1 };
const prepare = () => prepareGeneration(messages, options, imageLimits, { stream: false });
const prepared = await prepare();
const nodeStages = {
  prepareGenerationMs: await timeStage(runs, prepare),
  encodeFrameMs: await timeStage(runs, () =>
    encodeFrame({ type: "request", id: 1, method: "generate", params: prepared.params }, prepared.payload),
  ),
};
const frameFile = join(folder, "request.frame");
writeFileSync(frameFile, encodeFrame({ type: "request", id: 1, method: "generate", params: prepared.params }, prepared.payload));

// The whole call, and the worker's own account of it.
const loaded = await Idefics2.load({ model, python: values.python, deviceMap: values.device });
const calls = { wallMs: [], workerPreprocessMs: [], workerPrefillMs: [], workerTotalMs: [], outsideWorkerMs: [] };
try {
  for (let i = 0; i < 3; i++) await loaded.generate(messages, options);
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    const result = await loaded.generate(messages, options);
    const wall = performance.now() - started;
    calls.wallMs.push(wall);
    calls.workerPreprocessMs.push(result.timings.preprocessMs);
    calls.workerPrefillMs.push(result.timings.prefillMs);
    calls.workerTotalMs.push(result.timings.totalMs);
    calls.outsideWorkerMs.push(wall - result.timings.totalMs);
  }
} finally {
  await loaded.close();
}

const workerStages = JSON.parse(
  await run(
    values.python,
    [
      join(packageDir, "scripts", "ttft", "worker_stages.py"),
      "--model",
      model,
      "--frame",
      frameFile,
      "--runs",
      String(runs),
      "--longest-edge",
      String(stagesLongestEdge),
      "--device",
      values.device,
    ],
    {
      PYTHONPATH: [join(packageDir, "python"), process.env.PYTHONPATH].filter(Boolean).join(":"),
    },
  ),
);

const report = {
  date: new Date().toISOString(),
  machine: `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}`,
  nodeVersion: process.version,
  package: packageDir,
  model,
  stagesLongestEdge,
  runs,
  // A build from before the payload was kept as the pictures' own buffers has one Buffer here.
  payloadBytes: prepared.payloadBytes ?? prepared.payload.length,
  call: Object.fromEntries(Object.entries(calls).map(([key, samples]) => [key, summary(samples)])),
  node: nodeStages,
  worker: workerStages,
};
const text = JSON.stringify(report, null, 2);
if (values.out) writeFileSync(values.out, `${text}\n`);
process.stdout.write(`${text}\n`);

function run(file, args, env) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr = (stderr + chunk).slice(-20_000)));
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolvePromise(stdout) : reject(new Error(`${file} exited ${code}: ${stderr.slice(-3000)}`)),
    );
  });
}

#!/usr/bin/env node
// Soak: sequential requests, then concurrent ones with random aborts and worker kills, on the embedded model.
// Every promise must settle; successes + aborts + crash errors must add up to the requests made; no request may
// be answered twice; Node's and Python's resident memory must stay under the stated bounds.
// Needs `npm run build` first (it imports dist/).
//
// node scripts/soak/soak.mjs [--sequential 1000] [--concurrent 100] [--kills 3] [--python PATH]
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { AbortError, Idefics2, WorkerCrashedError, image, user } from "../../dist/index.js";

const question = [user(image(new URL("../../assets/demo/second.jpg", import.meta.url).pathname), "What colour is the shape?")];

/** Resident memory of a process in MB, from /proc (Linux); null elsewhere or once it has exited. */
function residentMb(pid) {
  try {
    const line = readFileSync(`/proc/${pid}/status`, "utf8")
      .split("\n")
      .find((entry) => entry.startsWith("VmRSS:"));
    return line ? Number(line.split(/\s+/)[1]) / 1024 : null;
  } catch {
    return null;
  }
}

// Resolves once the model's worker answers; a worker whose death Node has not noticed yet is replaced first.
async function liveWorker(model) {
  for (;;) {
    try {
      return await model.workerInfo();
    } catch (error) {
      if (!(error instanceof WorkerCrashedError)) throw error;
    }
  }
}

/**
 * Runs the soak and returns its tally; throws if a request is lost, answered twice, or settles wrongly.
 * Memory is sampled after each phase; the caller judges the bounds.
 */
export async function runSoak({ sequential, concurrent, kills, python, seed = 1 }) {
  let random = seed;
  const next = () => {
    random = (random * 1103515245 + 12345) % 2 ** 31;
    return random / 2 ** 31;
  };
  const model = await Idefics2.load(python ? { python } : {});
  const tally = { requests: 0, successes: 0, aborts: 0, crashes: 0, other: [], doubleSettled: 0, kills: 0 };
  const memory = [];
  const sample = (phase) => memory.push({ phase, nodeMb: process.memoryUsage().rss / 2 ** 20, pythonMb: residentMb(model.workerPid) });
  // Each request settles exactly once; a second settlement would be a protocol bug, so it is counted.
  const track = (promise) => {
    tally.requests++;
    let settled = false;
    const once = (kind, error) => {
      if (settled) tally.doubleSettled++;
      settled = true;
      if (kind === "ok") tally.successes++;
      else if (error instanceof AbortError) tally.aborts++;
      else if (error instanceof WorkerCrashedError) tally.crashes++;
      else tally.other.push(`${error?.name}: ${error?.message}`);
    };
    return promise.then(
      (result) => {
        if (!result.text.toLowerCase().includes("blue")) tally.other.push(`wrong answer: ${result.text}`);
        once("ok");
      },
      (error) => once("error", error),
    );
  };

  try {
    sample("start");
    for (let i = 0; i < sequential; i++) {
      await track(model.generate(question, { maxNewTokens: 8 }));
      if (i % 100 === 99) sample(`sequential ${i + 1}`);
    }
    sample("sequential done");

    const killAt = new Set(Array.from({ length: kills }, (_, k) => Math.floor(((k + 1) * concurrent) / (kills + 1))));
    const all = [];
    for (let i = 0; i < concurrent; i++) {
      const controller = new AbortController();
      const call =
        next() < 0.5
          ? model.generate(question, { maxNewTokens: 8, signal: controller.signal })
          : model.stream(question, { maxNewTokens: 8, signal: controller.signal }).result;
      all.push(track(call));
      if (next() < 0.2) setTimeout(() => controller.abort(new Error("soak abort")), Math.floor(next() * 200));
      if (killAt.has(i)) {
        // Let the queue drain into the worker a little, then kill it mid-work. workerInfo() first replaces a worker
        // killed earlier whose calls have all settled, so each kill hits a live worker.
        await new Promise((resolve) => setTimeout(resolve, 100));
        await liveWorker(model);
        process.kill(model.workerPid, "SIGKILL");
        tally.kills++;
      }
    }
    await Promise.all(all);
    sample("concurrent done");
    // The model must still answer after everything above.
    await track(model.generate(question, { maxNewTokens: 8 }));
    sample("end");
    return { ...tally, restarts: model.restarts, memory };
  } finally {
    await model.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      sequential: { type: "string", default: "1000" },
      concurrent: { type: "string", default: "100" },
      kills: { type: "string", default: "3" },
      python: { type: "string" },
    },
  });
  const started = Date.now();
  const result = await runSoak({
    sequential: Number(values.sequential),
    concurrent: Number(values.concurrent),
    kills: Number(values.kills),
    python: values.python,
  });
  const settled = result.successes + result.aborts + result.crashes + result.other.length;
  process.stdout.write(`${JSON.stringify({ ...result, settled, seconds: Math.round((Date.now() - started) / 1000) }, null, 2)}\n`);
  process.exitCode = settled === result.requests && result.doubleSettled === 0 && result.other.length === 0 ? 0 : 1;
}

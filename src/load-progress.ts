import { z } from "zod";
import { progressEvent } from "./progress-event.js";
import { SetupStage } from "./runtime/setup-progress.js";

/**
 * The steps of load(), in order: the Python environment's (SetupStage), then `worker` (the worker starts) and
 * `model` (the load request is sent), then the worker's own: `processor`, `model` (from_pretrained; its `progress`
 * events count the weights placed, as items), `download` (a hub model's weights being fetched: `progress` in bytes),
 * and `unload` when it replaces a model. `restart` starts the same steps again after a crash.
 */
export const LoadStage = z.enum([...SetupStage.options, "worker", "unload", "processor", "model", "download", "restart"]);
export type LoadStage = z.infer<typeof LoadStage>;

/**
 * What load() reports while it works, told apart by `type`: `stage` when a step starts, `log` for one line of a
 * step's output (venv, pip), `progress` for a count of work done. Every event has `stage`, a printable `message`
 * and `elapsedMs` since load() (or a crash restart) began.
 */
export const LoadProgress = progressEvent(LoadStage);
export type LoadProgress = z.infer<typeof LoadProgress>;

// The stages python/idefics2_worker/engine reports; the wire types them as strings.
const WorkerLoadStage = LoadStage.extract(["unload", "processor", "model", "download"]);

/** A stage the worker reported, as a LoadStage: one this SDK does not know (a newer worker's) counts as `model`. @internal */
export function workerLoadStage(stage: string): LoadStage {
  const known = WorkerLoadStage.safeParse(stage);
  return known.success ? known.data : "model";
}

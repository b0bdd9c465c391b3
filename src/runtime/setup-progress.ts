import { z } from "zod";
import { progressEvent, type Unstamped } from "../progress-event.js";

/**
 * The steps of finding or creating the Python environment, in the order they happen. `dev-extras` installs
 * requirements-dev.txt into the environment (`dev: true`, once); `verify` follows `pip` and `dev-extras`.
 */
export const SetupStage = z.enum(["probe", "wait-lock", "reuse", "cleanup", "venv", "pip", "dev-extras", "verify", "ready"]);
export type SetupStage = z.infer<typeof SetupStage>;

/**
 * What ensurePythonEnvironment reports while it works, told apart by `type`: `stage` when a step starts (message
 * says what it does), `log` for one line of venv/pip output (message is the line; pip's raw byte counts are not
 * logged), `progress` for a count of work done: during `pip` and `dev-extras`, the pip upgrade (1 item), each
 * download's bytes (`Downloading <file>`, for files of 512 KiB and more), the packages found (items, no total)
 * and the packages installed (0, then all of them, items).
 */
export const SetupProgress = progressEvent(SetupStage);
export type SetupProgress = z.infer<typeof SetupProgress>;

/** How the setup steps report: their events are stamped with `elapsedMs` on the way to the caller's listener. */
export type ProgressListener = (event: Unstamped<SetupProgress>) => void;

// A listener that throws must not break setup half-way (pip running, lock held): its errors are dropped.
/** @internal */
export function emitProgress(listener: ProgressListener | undefined, event: Unstamped<SetupProgress>): void {
  if (!listener) return;
  try {
    listener(event);
  } catch {
    // The listener's own failure is not the setup's failure.
  }
}

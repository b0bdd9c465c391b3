import { z } from "zod";

/**
 * The steps of finding or creating the Python environment, in the order they happen. `dev-extras` installs
 * requirements-dev.txt into the environment (`dev: true`, once); `verify` follows `pip` and `dev-extras`.
 */
export const SetupStage = z.enum(["probe", "wait-lock", "reuse", "cleanup", "venv", "pip", "dev-extras", "verify", "ready"]);
export type SetupStage = z.infer<typeof SetupStage>;

/**
 * What ensurePythonEnvironment reports while it works: `stage` when a step starts (message says what it
 * does), `log` for one line of venv/pip output (message is the line).
 */
export const SetupProgress = z.object({
  type: z.enum(["stage", "log"]),
  stage: SetupStage,
  message: z.string(),
});
export type SetupProgress = z.infer<typeof SetupProgress>;

export type ProgressListener = (event: SetupProgress) => void;

// A listener that throws must not break setup half-way (pip running, lock held): its errors are dropped.
/** @internal */
export function emitProgress(listener: ProgressListener | undefined, event: SetupProgress): void {
  if (!listener) return;
  try {
    listener(event);
  } catch {
    // The listener's own failure is not the setup's failure.
  }
}

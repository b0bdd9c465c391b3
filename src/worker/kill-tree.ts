import { killGroup } from "./process-group.js";

/** The part of a subprocess that signalling needs. */
export interface Killable {
  readonly pid?: number | undefined;
  kill(signal: NodeJS.Signals): boolean;
}

const TERMINATE_GRACE_MS = 2_000;
const SHUTDOWN_GRACE_MS = 5_000;

/** Waits for a worker whose stdin was ended to exit, then sends SIGTERM after a grace period, then SIGKILL. */
export async function escalate(subprocess: Killable, exit: Promise<void>): Promise<void> {
  const exited = (ms: number) =>
    Promise.race([exit.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms).unref())]);
  if (await exited(SHUTDOWN_GRACE_MS)) return;
  killTree(subprocess, "SIGTERM");
  if (await exited(TERMINATE_GRACE_MS)) return;
  killTree(subprocess, "SIGKILL");
}

// The worker leads its own process group (spawned so, see process-group.ts; the real worker also makes itself one,
// python/idefics2_worker/__main__.py): signal the group, so anything it started ends with it; where it does not lead
// one (Windows), signal the process alone.
export function killTree(subprocess: Killable, signal: NodeJS.Signals): void {
  const pid = subprocess.pid;
  if (pid !== undefined && process.platform !== "win32" && killGroup(pid, signal)) return;
  subprocess.kill(signal);
}

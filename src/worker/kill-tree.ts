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

// The worker leads its own process group (python/idefics2_worker/__main__.py): signal the group, so anything
// it started ends with it; where it does not lead one (Windows, or a fixture), signal the process alone.
export function killTree(subprocess: Killable, signal: NodeJS.Signals): void {
  const pid = subprocess.pid;
  if (pid !== undefined && process.platform !== "win32") {
    try {
      process.kill(-pid, signal);
      return;
    } catch {
      // No such group: fall through to the process itself.
    }
  }
  subprocess.kill(signal);
}

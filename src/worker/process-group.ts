/**
 * The spawn option that makes a child lead a process group of its own (and a session) from its first instruction,
 * so that whatever it starts can be ended with it, even when the child is not the worker (a wrapper script, a
 * misbehaving interpreter) and never makes itself a group leader. Not on Windows, where groups work differently.
 */
export const OWN_PROCESS_GROUP = process.platform !== "win32";

/** The part of a spawned child that reaping needs. */
export interface GroupLeader {
  readonly pid?: number | undefined;
  once(event: "exit", listener: () => void): unknown;
}

const leaders = new Set<number>();

/**
 * Ends a child's whole process group once the child itself exits (so nothing it left running holds its pipes open
 * or outlives it), and when Node exits first. A child spawned with OWN_PROCESS_GROUP escapes the cleanup execa does
 * for other children on exit; this is that cleanup, for its group.
 */
export function reapProcessGroup(child: GroupLeader): void {
  const pid = child.pid;
  if (!OWN_PROCESS_GROUP || pid === undefined) return;
  if (leaders.size === 0) process.once("exit", killLeftGroups);
  leaders.add(pid);
  child.once("exit", () => {
    leaders.delete(pid);
    if (leaders.size === 0) process.removeListener("exit", killLeftGroups);
    killGroup(pid, "SIGKILL");
  });
}

/** Sends `signal` to the process group `pid` leads; false when there is no such group (left). */
export function killGroup(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    return false;
  }
}

function killLeftGroups(): void {
  for (const pid of leaders) killGroup(pid, "SIGKILL");
}

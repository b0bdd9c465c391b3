import { readFileSync } from "node:fs";

/** True when the process has ended: no such pid, or only its zombie is left (state Z in /proc/PID/stat). */
export function ended(pid: number): boolean {
  if (process.platform === "linux") {
    try {
      // The state follows the command name, which is in parentheses and may itself hold spaces or parentheses.
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
    } catch {
      return true;
    }
  }
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
}

/** The pids still running after up to `ms` milliseconds (a killed process takes a moment to end). */
export async function stillRunning(pids: number[], ms = 1000): Promise<number[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const running = pids.filter((pid) => !ended(pid));
    if (running.length === 0 || Date.now() >= deadline) return running;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Every `pid N` a fixture worker wrote to its stderr (`child pid N of pid M`, `loading in pid N`). */
export function pidsIn(lines: string[]): number[] {
  return lines.flatMap((line) => [...line.matchAll(/\bpid (\d+)/g)].map((match) => Number(match[1])));
}

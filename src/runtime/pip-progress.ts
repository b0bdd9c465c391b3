import type { Unstamped } from "../progress-event.js";
import type { SetupProgress, SetupStage } from "./setup-progress.js";

type Count = Unstamped<Extract<SetupProgress, { type: "progress" }>>;

/** What a line of pip's output was: a count (`Progress N of M`, never a `log` event) or a line to log. */
export type PipLine = "count" | "log";

/**
 * Reads `pip install`'s output, line by line, into counts. pip ≥ 24.1 with `--progress-bar raw` prints a
 * download's bytes as `Progress <done> of <total>` (total 0 when the server gave no size; files under 512 KiB
 * print none) after the line naming the file (`Downloading <file> (<size>)`); these become `bytes` counts named
 * after that file. The packages pip finds (`Collecting ...`, `Processing <file>`) become an `items` count
 * without a total (pip learns the total only when it has resolved them all), and the installation 0 then N of
 * N `items` (`Installing collected packages: ...`, `Successfully installed ...`): pip says nothing between the two.
 * Each other line is left to be logged. @internal
 */
export function pipProgressReader(stage: SetupStage, emit: (event: Count) => void): (line: string) => PipLine {
  let file: string | undefined;
  let found = 0;
  let installing: number | undefined;
  const count = (message: string, done: number, total: number | undefined, unit: Count["unit"]) =>
    emit({ type: "progress", stage, message, done, unit, ...(total === undefined ? {} : { total }) });

  return (line) => {
    const raw = /^Progress (\d+) of (\d+)$/.exec(line);
    if (raw) {
      const total = Number(raw[2]);
      count(file ? `Downloading ${file}` : "Downloading", Number(raw[1]), total > 0 ? total : undefined, "bytes");
      return "count";
    }
    const download = /^\s*(?:Downloading|Resuming download) (\S+)/.exec(line);
    if (download?.[1]) {
      file = fileName(download[1]);
      return "log";
    }
    const collecting = /^(Collecting|Processing) (\S+)/.exec(line);
    if (collecting?.[2]) {
      found += 1;
      const what = collecting[1] === "Processing" ? fileName(collecting[2]) : collecting[2];
      count(`Collecting ${what}`, found, undefined, "items");
      return "log";
    }
    const install = /^Installing collected packages: (.+)$/.exec(line);
    if (install?.[1]) {
      installing = install[1].split(", ").length;
      count(`Installing ${packages(installing)}`, 0, installing, "items");
      return "log";
    }
    const installed = /^Successfully installed (.+)$/.exec(line);
    if (installed?.[1]) {
      const done = installed[1].trim().split(/\s+/).length;
      const total = Math.max(done, installing ?? done);
      count(`Installed ${packages(done)}`, done, total, "items");
      installing = undefined;
      return "log";
    }
    return "log";
  };
}

// pip names a download by its URL or file name, a local file by its path: the file's name is what a person reads.
function fileName(link: string): string {
  const withoutFragment = link.replace(/[#?].*$/, "");
  const name = withoutFragment.slice(withoutFragment.lastIndexOf("/") + 1);
  try {
    return decodeURIComponent(name) || link;
  } catch {
    return name || link;
  }
}

function packages(count: number): string {
  return `${count} package${count === 1 ? "" : "s"}`;
}

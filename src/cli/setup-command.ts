import { printable } from "../printable.js";
import { ensurePythonEnvironment } from "../runtime/python-environment.js";
import { parseCommandLine } from "./command-line.js";
import { createProgressDisplay, showingProgress } from "./progress-display.js";

const SETUP_USAGE = "Usage: idefics2 setup [--dev] [--python PATH] [--home DIR]";

// Creates (or checks) the managed environment, reporting progress on stderr (pip's own lines go to the set-up's log
// file); prints the interpreter path.
export async function runSetup(args: string[]): Promise<number> {
  const { values } = parseCommandLine(
    args,
    { dev: { type: "boolean" }, python: { type: "string" }, home: { type: "string" }, help: { type: "boolean", short: "h" } },
    "setup",
  );
  if (values.help) {
    process.stdout.write(`${SETUP_USAGE}\n`);
    return 0;
  }
  const environment = await showingProgress(createProgressDisplay(), (onProgress) =>
    ensurePythonEnvironment({
      dev: values.dev ?? false,
      // What setup is for: a package deleted or damaged since is found (every file checked) and reinstalled.
      checkFiles: true,
      ...(values.python === undefined ? {} : { python: values.python }),
      ...(values.home === undefined ? {} : { home: values.home }),
      onProgress,
    }),
  );
  const versions = Object.entries(environment.versions)
    .filter((entry): entry is [string, string | null] => typeof entry[1] === "string" || entry[1] === null)
    .map(([name, version]) => `${name} ${version ?? "missing"}`)
    .join(", ");
  process.stderr.write(`Python environment ready (${environment.source}): ${printable(versions)}\n`);
  process.stdout.write(`${environment.python}\n`);
  return 0;
}

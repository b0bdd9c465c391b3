import { printable } from "../printable.js";
import { ensurePythonEnvironment } from "../runtime/python-environment.js";
import { parseCommandLine } from "./command-line.js";

const SETUP_USAGE = "Usage: idefics2 setup [--dev] [--python PATH] [--home DIR]";

// Creates (or checks) the managed environment, reporting progress on stderr; prints the interpreter path.
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
  const environment = await ensurePythonEnvironment({
    dev: values.dev ?? false,
    // What setup is for: a package deleted or damaged since is found (every file checked) and reinstalled.
    checkFiles: true,
    ...(values.python === undefined ? {} : { python: values.python }),
    ...(values.home === undefined ? {} : { home: values.home }),
    onProgress: (event) => process.stderr.write(`[${event.stage}] ${printable(event.message)}\n`),
  });
  const versions = Object.entries(environment.versions)
    .filter((entry): entry is [string, string | null] => typeof entry[1] === "string" || entry[1] === null)
    .map(([name, version]) => `${name} ${version ?? "missing"}`)
    .join(", ");
  process.stderr.write(`Python environment ready (${environment.source}): ${printable(versions)}\n`);
  process.stdout.write(`${environment.python}\n`);
  return 0;
}

// The interpreter the worker's tests and checks run on: IDEFICS2_PYTHON when set, else the managed dev
// environment (created on first use by the built package).
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));

export async function testPython(tool) {
  if (process.env.IDEFICS2_PYTHON) return process.env.IDEFICS2_PYTHON;
  const built = path.join(root, "dist", "runtime", "python-environment.js");
  if (!existsSync(built)) {
    process.stderr.write(`${tool}: ${built} is missing; run \`npm run build\` first (or set IDEFICS2_PYTHON).\n`);
    process.exit(1);
  }
  const { ensurePythonEnvironment } = await import(pathToFileURL(built).href);
  const environment = await ensurePythonEnvironment({
    dev: true,
    onProgress: (event) => {
      if (event.type === "stage") process.stderr.write(`[setup:${event.stage}] ${event.message}\n`);
    },
  });
  return environment.python;
}

#!/usr/bin/env node
// Runs the worker's pytest suite (python/tests) on the test interpreter: IDEFICS2_PYTHON when set, else the
// managed dev environment (created on first use by the built package). Exits with pytest's code.
// node scripts/test/run-pytest.mjs [PATH...] [pytest options]: paths (files, folders, file::test) replace python/tests.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { root, testPython } from "./test-python.mjs";

let python;
try {
  python = await testPython("run-pytest");
} catch (error) {
  process.stderr.write(`run-pytest: ${error?.summary ?? error?.message ?? String(error)}\n`);
  process.exit(1);
}

const args = process.argv.slice(2);
const givesPaths = args.some((arg) => !arg.startsWith("-") && existsSync(path.resolve(root, arg.split("::")[0])));
const pythonPath = [path.join(root, "python"), process.env.PYTHONPATH].filter(Boolean).join(path.delimiter);
const child = spawn(python, ["-m", "pytest", ...(givesPaths ? [] : ["python/tests"]), ...args], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, PYTHONPATH: pythonPath, PYTHONUNBUFFERED: "1", PYTHONIOENCODING: "utf-8" },
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => child.kill(signal));
child.on("error", (error) => {
  process.stderr.write(`run-pytest: cannot start ${python}: ${error.message}\n`);
  process.exit(1);
});
child.on("exit", (code, signal) => {
  if (code === 5) {
    // pytest's "no tests collected": a suite that silently ran nothing is a failure here.
    process.stderr.write(`run-pytest: pytest collected no tests from ${givesPaths ? "the paths given" : "python/tests"}\n`);
    process.exit(1);
  }
  process.exit(code ?? (signal ? 1 : 0));
});

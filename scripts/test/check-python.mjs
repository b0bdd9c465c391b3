#!/usr/bin/env node
// The worker's linters and type checker on the test interpreter: ruff (lint and format) over python/ and the
// notebook test's kernel driver, pyright over the worker package (python/pyproject.toml). Stops at the first that
// fails, with its exit code.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { root, testPython } from "./test-python.mjs";

let python;
try {
  python = await testPython("check-python");
} catch (error) {
  process.stderr.write(`check-python: ${error?.summary ?? error?.message ?? String(error)}\n`);
  process.exit(1);
}

const pyright = path.join(root, "node_modules", ".bin", "pyright");
const checks = [
  [python, ["-m", "ruff", "check", "python"]],
  [python, ["-m", "ruff", "format", "--check", "python"]],
  [python, ["-m", "ruff", "check", "--config", "python/pyproject.toml", "test/notebook"]],
  [python, ["-m", "ruff", "format", "--config", "python/pyproject.toml", "--check", "test/notebook"]],
  [pyright, ["--pythonpath", python, "-p", "python/pyproject.toml"]],
];
for (const [file, args] of checks) {
  process.stderr.write(`check-python: ${path.basename(file)} ${args.join(" ")}\n`);
  const done = spawnSync(file, args, { cwd: root, stdio: "inherit" });
  if (done.error || done.status !== 0) {
    if (done.error) process.stderr.write(`check-python: cannot start ${file}: ${done.error.message}\n`);
    process.exit(done.status || 1);
  }
}

import { execa } from "execa";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, expect, test } from "vitest";
import { startBytecodeWarmup, workerBytecode } from "../../src/runtime/worker-bytecode.js";
import { workerCommand } from "../../src/runtime/worker-command.js";
import { testPython } from "../helpers/python.js";

const folders: string[] = [];
afterEach(() => {
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true });
});
function temporary(): string {
  const folder = mkdtempSync(path.join(os.tmpdir(), "idefics2-bytecode-"));
  folders.push(folder);
  return folder;
}

test("only an interpreter whose torch and transformers were never compiled gets a bytecode folder, one marker per interpreter", () => {
  const home = temporary();
  expect(workerBytecode("/usr/bin/python3", { compiled: true }, home)).toBeUndefined();
  expect(workerBytecode("/usr/bin/python3", {}, home)).toBeUndefined();
  const first = workerBytecode("/usr/bin/python3", { compiled: false }, home);
  const other = workerBytecode("/opt/venv/bin/python", { compiled: false }, home);
  expect(first?.folder).toBe(path.join(home, "bytecode"));
  expect(first?.marker).toMatch(/warm-[0-9a-f]{16}\.json$/);
  expect(first?.sources).toMatch(/sources-[0-9a-f]{16}\.json$/);
  expect(other?.marker).not.toBe(first?.marker);
  expect(first?.warm).toBe(false);
  mkdirSync(path.join(home, "bytecode"));
  writeFileSync(first?.marker ?? "", "{}");
  expect(workerBytecode("/usr/bin/python3", { compiled: false }, home)?.warm).toBe(true);
  expect(workerBytecode("/opt/venv/bin/python", { compiled: false }, home)?.warm).toBe(false);
});

test("the warm-up compiles the listed sources into the folder in the background, and a worker started after reads them there", async () => {
  const home = temporary();
  const code = temporary();
  writeFileSync(path.join(code, "listed_module.py"), "ANSWER = 42\n");
  const python = testPython();
  const bytecode = workerBytecode(python, { compiled: false }, home);
  if (!bytecode) throw new Error("expected a bytecode folder");
  mkdirSync(bytecode.folder);
  writeFileSync(bytecode.sources, JSON.stringify([path.join(code, "listed_module.py")]));
  startBytecodeWarmup({ python }, bytecode);
  const deadline = Date.now() + 60_000;
  while (!existsSync(bytecode.marker) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  expect(JSON.parse(readFileSync(bytecode.marker, "utf8"))).toEqual({ compiled: 1, present: 0, listed: 1 });

  const warm = workerBytecode(python, { compiled: false }, home);
  expect(warm?.warm).toBe(true);
  const command = workerCommand({ python }, process.env, warm);
  const read = await execa(command.file, ["-v", "-c", "import listed_module; print(listed_module.ANSWER)"], {
    env: { ...command.env, PYTHONPATH: code },
    extendEnv: false,
  });
  expect(read.stdout).toBe("42");
  expect(
    read.stderr
      .split("\n")
      .some((line) => line.startsWith("# code object from") && line.includes(bytecode.folder) && line.includes("listed_module")),
  ).toBe(true);
  expect(existsSync(path.join(code, "__pycache__"))).toBe(false);
});

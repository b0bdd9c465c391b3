import { execa } from "execa";
import { existsSync } from "node:fs";
import path from "node:path";
import { expect, test } from "vitest";
import { packageRoot } from "../../src/runtime/package-root.js";
import { safeModuleArgs } from "../../src/runtime/safe-module-args.js";
import { workerCommand } from "../../src/runtime/worker-command.js";
import { testPython } from "../helpers/python.js";

test("the package root is the folder holding package.json and python/", () => {
  expect(existsSync(path.join(packageRoot(), "package.json"))).toBe(true);
  expect(existsSync(path.join(packageRoot(), "python", "requirements.txt"))).toBe(true);
});

test("the worker runs module idefics2_worker through the safe bootstrap, in python/, with PYTHONPATH there and only the variables it needs", () => {
  const parent = {
    PATH: "/usr/bin",
    HOME: "/home/someone",
    HF_HOME: "/models",
    HF_HUB_OFFLINE: "1",
    TRANSFORMERS_VERBOSITY: "error",
    CUDA_VISIBLE_DEVICES: "1",
    BNB_CUDA_VERSION: "130",
    TORCH_HOME: "/torch",
    PYTORCH_CUDA_ALLOC_CONF: "expandable_segments:True",
    NCCL_DEBUG: "INFO",
    LD_LIBRARY_PATH: "/usr/local/cuda/lib64",
    XDG_CACHE_HOME: "/cache",
    https_proxy: "http://proxy:3128",
    PYTHONPATH: "/somewhere/else",
    PYTHONHOME: "/broken",
    AWS_SECRET_ACCESS_KEY: "secret",
    NODE_OPTIONS: "--inspect",
  };
  expect(workerCommand({ python: "/envs/x/bin/python" }, parent)).toEqual({
    file: "/envs/x/bin/python",
    args: safeModuleArgs("idefics2_worker"),
    cwd: path.join(packageRoot(), "python"),
    env: {
      PATH: "/usr/bin",
      HOME: "/home/someone",
      HF_HOME: "/models",
      HF_HUB_OFFLINE: "1",
      TRANSFORMERS_VERBOSITY: "error",
      CUDA_VISIBLE_DEVICES: "1",
      BNB_CUDA_VERSION: "130",
      TORCH_HOME: "/torch",
      PYTORCH_CUDA_ALLOC_CONF: "expandable_segments:True",
      NCCL_DEBUG: "INFO",
      LD_LIBRARY_PATH: "/usr/local/cuda/lib64",
      XDG_CACHE_HOME: "/cache",
      https_proxy: "http://proxy:3128",
      PYTHONPATH: path.join(packageRoot(), "python"),
      PYTHONDONTWRITEBYTECODE: "1",
      PYTHONUNBUFFERED: "1",
      PYTHONIOENCODING: "utf-8",
    },
  });
});

test("the launch spec finds the worker package from a real interpreter", async () => {
  const command = workerCommand({ python: testPython() });
  const found = await execa(command.file, ["-c", "import importlib.util as u; print(u.find_spec('idefics2_worker').origin)"], {
    env: command.env,
    extendEnv: false,
  });
  expect(found.stdout).toBe(path.join(packageRoot(), "python", "idefics2_worker", "__init__.py"));
});

test("an interpreter the user brings keeps their PYTHONPATH after the worker's; the managed one never sees it", () => {
  const parent = { PATH: "/usr/bin", PYTHONPATH: "/opt/extra-site" };
  const own = path.join(packageRoot(), "python");
  expect(workerCommand({ python: "/usr/bin/python3", source: "env" }, parent).env.PYTHONPATH).toBe(
    `${own}${path.delimiter}/opt/extra-site`,
  );
  expect(workerCommand({ python: "/usr/bin/python3", source: "option" }, parent).env.PYTHONPATH).toBe(
    `${own}${path.delimiter}/opt/extra-site`,
  );
  expect(workerCommand({ python: "/envs/x/bin/python", source: "managed" }, parent).env.PYTHONPATH).toBe(own);
});

test("with a bytecode folder not yet warm the worker lists its sources and writes no bytecode; once warm it reads and writes there", () => {
  const parent = { PATH: "/usr/bin", PYTHONDONTWRITEBYTECODE: "1", PYTHONPYCACHEPREFIX: "/elsewhere" };
  const bytecode = { folder: "/h/bytecode", marker: "/h/bytecode/warm-1.json", sources: "/h/bytecode/sources-1.json", warm: false };
  const listing = workerCommand({ python: "/usr/bin/python3" }, parent, bytecode).env;
  expect(listing.IDEFICS2_BYTECODE_SOURCES).toBe("/h/bytecode/sources-1.json");
  expect(listing.PYTHONDONTWRITEBYTECODE).toBe("1");
  expect(listing.PYTHONPYCACHEPREFIX).toBeUndefined();
  const reading = workerCommand({ python: "/usr/bin/python3" }, parent, { ...bytecode, warm: true }).env;
  expect(reading.PYTHONPYCACHEPREFIX).toBe("/h/bytecode");
  expect(reading.PYTHONDONTWRITEBYTECODE).toBeUndefined();
  expect(reading.IDEFICS2_BYTECODE_SOURCES).toBeUndefined();
  const plain = workerCommand({ python: "/usr/bin/python3" }, parent).env;
  expect([plain.PYTHONDONTWRITEBYTECODE, plain.PYTHONPYCACHEPREFIX, plain.IDEFICS2_BYTECODE_SOURCES]).toEqual(["1", undefined, undefined]);
});

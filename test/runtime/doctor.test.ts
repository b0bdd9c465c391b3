import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, test, vi } from "vitest";
import { DoctorReport, runDoctor } from "../../src/runtime/doctor.js";
import { testPython } from "../helpers/python.js";
import { fakePython, goodVersions } from "./fake-python.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "idefics2-doctor-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

test("on the suite's interpreter it reports versions, platform, CUDA and the bitsandbytes library in use", async () => {
  const report = DoctorReport.parse(await runDoctor({ python: testPython() }));
  expect(report).toMatchObject({ ok: true, python: testPython(), source: "option" });
  expect(report.versions).toMatchObject({ python: expect.stringMatching(/^3\.\d+\.\d+$/), transformers: expect.stringMatching(/^5\./) });
  expect(report.platform).toMatchObject({ os: process.platform, arch: process.arch, python: expect.any(String) });
  expect(report.bitsandbytes.version).toBe(report.versions?.bitsandbytes);
  expect(report.bitsandbytes.library).toMatch(/libbitsandbytes_(cpu|cuda\d+)\.(so|dylib|dll)$/);
  const noCuda = report.problems.find((problem) => problem.code === "CUDA_UNAVAILABLE");
  if (report.cuda.available) {
    expect(noCuda).toBeUndefined();
    expect(report.cuda.devices[0]).toMatchObject({ name: expect.any(String), totalMemory: expect.any(Number) });
  } else {
    // This project's machines have no GPU: the doctor must say quantized loads run on the CPU.
    expect(report.cuda.devices).toEqual([]);
    expect(report.bitsandbytes).toMatchObject({ backend: "CPU", compiledWithCuda: false });
    expect(noCuda).toMatchObject({ severity: "warning", message: expect.stringContaining("run on the CPU") });
  }
}, 60_000);

test("a missing interpreter is reported as a problem, not thrown", async () => {
  const report = await runDoctor({ python: path.join(dir, "no-such-python") });
  expect(report).toMatchObject({ ok: false, python: null, versions: null });
  expect(report.problems).toEqual([
    expect.objectContaining({ code: "PYTHON_NOT_FOUND", severity: "error", message: expect.stringContaining("no-such-python") }),
  ]);
});

test("a managed environment not created yet is reported with the command that creates it", async () => {
  vi.stubEnv("IDEFICS2_PYTHON", "");
  const report = await runDoctor({ home: path.join(dir, "home"), basePython: testPython() }).finally(() => vi.unstubAllEnvs());
  expect(report.ok).toBe(false);
  expect(report.problems).toEqual([expect.objectContaining({ code: "ENV_SETUP_FAILED", fix: expect.stringContaining("idefics2 setup") })]);
});

test("an interpreter lacking packages and with a broken script is reported, with every problem found", async () => {
  const bare = await fakePython(dir, { ...goodVersions, transformers: null, bitsandbytes: null });
  const report = await runDoctor({ python: bare });
  expect(report.ok).toBe(false);
  expect(report.problems.map((problem) => problem.code)).toEqual(["MISSING_PYTHON_PACKAGE", "PROBE_FAILED"]);
});

test("a torchvision that does not import is an error with the uninstall fix", async () => {
  // A bare python3 with a stub torch (CPU, no CUDA) and a torchvision that fails the way a mismatched one does.
  const site = path.join(dir, "site");
  await mkdir(path.join(site, "torch"), { recursive: true });
  await mkdir(path.join(site, "torchvision"), { recursive: true });
  await writeFile(path.join(site, "torch", "__init__.py"), "from . import cuda, version\n");
  await writeFile(path.join(site, "torch", "version.py"), "cuda = None\n");
  await writeFile(path.join(site, "torch", "cuda.py"), "def is_available():\n    return False\n");
  await writeFile(path.join(site, "torchvision", "__init__.py"), "raise RuntimeError('operator torchvision::nms does not exist')\n");
  const wrapper = path.join(dir, "python-with-torchvision");
  // The stubs go after the PYTHONPATH the SDK sets, which finds the probe in python/.
  await writeFile(wrapper, `#!/bin/sh\nPYTHONPATH="$PYTHONPATH:${site}" exec python3 -s "$@"\n`, { mode: 0o755 });
  const report = await runDoctor({ python: wrapper });
  expect(report.torchvision).toEqual({ present: true, version: null });
  expect(report.problems).toContainEqual(
    expect.objectContaining({
      code: "TORCHVISION_BROKEN",
      severity: "error",
      message: expect.stringContaining("torchvision::nms does not exist"),
    }),
  );
  expect(report.problems).toContainEqual(
    expect.objectContaining({ code: "CUDA_UNAVAILABLE", message: expect.stringContaining("CPU build") }),
  );
});

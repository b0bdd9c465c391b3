import { z } from "zod";
import { AbortError, Idefics2Error } from "../errors.js";
import { checkBitsandbytes } from "./check-bitsandbytes.js";
import { runDoctorProbe, type DoctorProbe } from "./doctor-probe.js";
import { ensurePythonEnvironment, PythonEnvironmentSource, type EnsurePythonEnvironmentOptions } from "./python-environment.js";
import { PythonVersions } from "./python-versions.js";

export const DoctorProblemCode = z.enum([
  "PYTHON_NOT_FOUND",
  "PYTHON_TOO_OLD",
  "MISSING_PYTHON_PACKAGE",
  "ENV_SETUP_FAILED",
  "TORCH_BROKEN",
  "CUDA_UNAVAILABLE",
  "BNB_MISSING",
  "BNB_BROKEN",
  "BNB_BACKEND_UNAVAILABLE",
  "TORCHVISION_BROKEN",
  "PROBE_FAILED",
]);
export type DoctorProblemCode = z.infer<typeof DoctorProblemCode>;

/** One thing wrong with the environment; `warning`s leave the package usable (e.g. CPU only). */
export const DoctorProblem = z.object({
  code: DoctorProblemCode,
  severity: z.enum(["error", "warning"]),
  message: z.string(),
  fix: z.string(),
});
export type DoctorProblem = z.infer<typeof DoctorProblem>;

/** Everything the doctor found; `ok` is false when any problem is an error. */
export const DoctorReport = z.object({
  ok: z.boolean(),
  python: z.string().nullable(),
  source: PythonEnvironmentSource.nullable(),
  versions: PythonVersions.nullable(),
  platform: z.object({ os: z.string(), arch: z.string(), node: z.string(), python: z.string().nullable() }),
  cuda: z.object({
    available: z.boolean(),
    torchCuda: z.string().nullable(),
    devices: z.array(
      z.object({ index: z.number(), name: z.string(), capability: z.string(), totalMemory: z.number(), freeMemory: z.number().nullable() }),
    ),
  }),
  bitsandbytes: z.object({
    version: z.string().nullable(),
    backend: z.string().nullable(),
    library: z.string().nullable(),
    compiledWithCuda: z.boolean().nullable(),
  }),
  torchvision: z.object({ present: z.boolean(), version: z.string().nullable() }),
  problems: z.array(DoctorProblem),
});
export type DoctorReport = z.infer<typeof DoctorReport>;

export interface DoctorOptions extends Omit<EnsurePythonEnvironmentOptions, "create"> {
  /** Create the managed environment when it is missing (minutes, a large download). Default false: report it. */
  setup?: boolean | undefined;
}

/**
 * Checks the environment the worker would run on and reports what it finds. It throws only for an abort:
 * a missing interpreter, missing packages or a missing or failed setup become problems in the report.
 */
export async function runDoctor(options: DoctorOptions = {}): Promise<DoctorReport> {
  const report: DoctorReport = {
    ok: true,
    python: null,
    source: null,
    versions: null,
    platform: { os: process.platform, arch: process.arch, node: process.version, python: null },
    cuda: { available: false, torchCuda: null, devices: [] },
    bitsandbytes: { version: null, backend: null, library: null, compiledWithCuda: null },
    torchvision: { present: false, version: null },
    problems: [],
  };
  const problem = (code: DoctorProblemCode, severity: DoctorProblem["severity"], message: string, fix: string) =>
    report.problems.push({ code, severity, message, fix });

  try {
    const { setup, ...rest } = options;
    // Every file of the packages is checked: a deleted package folder must not pass for an installed package.
    const environment = await ensurePythonEnvironment({ ...rest, create: setup ?? false, checkFiles: rest.checkFiles ?? true });
    Object.assign(report, { python: environment.python, source: environment.source, versions: environment.versions });
  } catch (error) {
    if (error instanceof AbortError || options.signal?.aborted)
      throw error instanceof AbortError ? error : new AbortError(options.signal?.reason);
    if (!(error instanceof Idefics2Error)) throw error;
    const code = DoctorProblemCode.safeParse(error.code);
    problem(code.success ? code.data : "PROBE_FAILED", "error", error.message, error.fix ?? "Run `idefics2 setup`.");
    // An interpreter that runs but lacks packages is still worth examining.
    const given = options.python ?? process.env.IDEFICS2_PYTHON;
    if (error.code !== "MISSING_PYTHON_PACKAGE" || !given) return finish(report);
    report.python = given;
    report.source = options.python ? "option" : "env";
  }

  const python = report.python as string;
  if (report.versions) {
    const bnb = checkBitsandbytes(report.versions, python);
    if (bnb) problem("BNB_MISSING", "warning", bnb.message, bnb.fix ?? "");
  }
  const probed = await runDoctorProbe({ python, source: report.source ?? undefined }, { signal: options.signal });
  if (options.signal?.aborted) throw new AbortError(options.signal.reason);
  if (!probed.ok) {
    problem(
      "PROBE_FAILED",
      "error",
      `The doctor's check script failed in ${python}: ${probed.error}`,
      "Run the interpreter by hand to see why it fails.",
    );
    return finish(report);
  }
  describe(report, probed.probe, problem);
  return finish(report);
}

function describe(
  report: DoctorReport,
  probe: DoctorProbe,
  problem: (code: DoctorProblemCode, severity: DoctorProblem["severity"], message: string, fix: string) => void,
): void {
  report.platform.python = probe.platform;
  report.cuda = { available: probe.cuda.available, torchCuda: probe.torch.cuda, devices: probe.cuda.devices };
  report.bitsandbytes = {
    version: report.versions?.bitsandbytes ?? null,
    backend: probe.bitsandbytes.backend,
    library: probe.bitsandbytes.library,
    compiledWithCuda: probe.bitsandbytes.compiledWithCuda,
  };
  report.torchvision = { present: probe.torchvision.present, version: probe.torchvision.version };

  if (!probe.torch.ok) {
    problem(
      "TORCH_BROKEN",
      "error",
      `torch does not import: ${probe.torch.error}`,
      "Reinstall torch in this interpreter, or unset IDEFICS2_PYTHON to use the managed environment.",
    );
  } else if (!probe.cuda.available) {
    const why =
      probe.torch.cuda === null
        ? "this torch is a CPU build"
        : `torch ${probe.torch.cuda} finds no usable GPU${probe.cuda.error ? ` (${probe.cuda.error})` : ""}`;
    problem(
      "CUDA_UNAVAILABLE",
      "warning",
      `No CUDA: ${why}; models, 8-bit and 4-bit loads included, run on the CPU, slowly`,
      "For a GPU: bring a CUDA torch through IDEFICS2_PYTHON, or run `<env>/bin/python -m pip install torch --index-url https://download.pytorch.org/whl/cu130` in the managed environment.",
    );
  }
  const bnb = probe.bitsandbytes;
  if (bnb.present && !bnb.ok) {
    problem(
      "BNB_BROKEN",
      "warning",
      `bitsandbytes does not import: ${bnb.error}`,
      "Reinstall bitsandbytes, or load without quantization. `python -m bitsandbytes` prints its own diagnosis.",
    );
  } else if (bnb.ok && probe.cuda.available && !bnb.compiledWithCuda) {
    problem(
      "BNB_BACKEND_UNAVAILABLE",
      "warning",
      `bitsandbytes found a GPU but loaded no CUDA library (backend ${bnb.backend ?? "unknown"}${bnb.libraryError ? `: ${firstLine(bnb.libraryError)}` : ""}); quantized loads will fail on the GPU`,
      "Set BNB_CUDA_VERSION to a CUDA version bitsandbytes ships, or reinstall a bitsandbytes that matches torch's CUDA. `python -m bitsandbytes` prints its own diagnosis.",
    );
  }
  if (probe.torchvision.present && !probe.torchvision.ok) {
    problem(
      "TORCHVISION_BROKEN",
      "error",
      `torchvision is installed but does not import beside this torch: ${probe.torchvision.error}; transformers will fail on image processors`,
      "Uninstall it (`python -m pip uninstall torchvision`) so transformers uses its PIL image processor, or install the torchvision that matches torch.",
    );
  }
}

function finish(report: DoctorReport): DoctorReport {
  report.ok = report.problems.every((entry) => entry.severity !== "error");
  return report;
}

function firstLine(text: string): string {
  return (text.trim().split("\n")[0] ?? "").slice(0, 300);
}

import { execa } from "execa";
import { z } from "zod";
import { childEnvironment } from "./child-environment.js";

/** What the doctor's Python script finds by importing torch, bitsandbytes and torchvision. */
export const DoctorProbe = z.object({
  platform: z.string(),
  machine: z.string(),
  torch: z.object({ ok: z.boolean(), error: z.string().nullable(), cuda: z.string().nullable() }),
  cuda: z.object({
    available: z.boolean(),
    error: z.string().nullable(),
    devices: z.array(
      z.object({
        index: z.number().int(),
        name: z.string(),
        capability: z.string(),
        totalMemory: z.number(),
        freeMemory: z.number().nullable(),
      }),
    ),
  }),
  bitsandbytes: z.object({
    present: z.boolean(),
    ok: z.boolean(),
    error: z.string().nullable(),
    backend: z.string().nullable(),
    library: z.string().nullable(),
    compiledWithCuda: z.boolean().nullable(),
    libraryError: z.string().nullable(),
  }),
  torchvision: z.object({ present: z.boolean(), ok: z.boolean(), version: z.string().nullable(), error: z.string().nullable() }),
});
export type DoctorProbe = z.infer<typeof DoctorProbe>;

// fd 1 is pointed at stderr while importing, so stray prints from the libraries never corrupt the JSON.
// bitsandbytes.cextension sets BNB_BACKEND and `lib`: a native library wrapper (its CDLL at `_lib`), or
// ErrorHandlerMockBNBNativeLibrary holding the load error when no native library could be loaded.
const doctorCode = `
import importlib.util, json, os, platform, sys
out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
def short(error):
    return ("%s: %s" % (type(error).__name__, error)).strip().splitlines()[0][:500]
report = {"platform": platform.platform(), "machine": platform.machine(),
          "torch": {"ok": False, "error": None, "cuda": None},
          "cuda": {"available": False, "error": None, "devices": []},
          "bitsandbytes": {"present": importlib.util.find_spec("bitsandbytes") is not None, "ok": False, "error": None,
                           "backend": None, "library": None, "compiledWithCuda": None, "libraryError": None},
          "torchvision": {"present": importlib.util.find_spec("torchvision") is not None, "ok": False, "version": None, "error": None}}
try:
    import torch
    report["torch"].update(ok=True, cuda=torch.version.cuda)
    try:
        report["cuda"]["available"] = bool(torch.cuda.is_available())
        for index in range(torch.cuda.device_count() if report["cuda"]["available"] else 0):
            props = torch.cuda.get_device_properties(index)
            try:
                free = torch.cuda.mem_get_info(index)[0]
            except Exception:
                free = None
            report["cuda"]["devices"].append({"index": index, "name": props.name, "capability": "%d.%d" % (props.major, props.minor),
                                              "totalMemory": props.total_memory, "freeMemory": free})
    except Exception as error:
        report["cuda"]["error"] = short(error)
except Exception as error:
    report["torch"]["error"] = short(error)
if report["bitsandbytes"]["present"]:
    try:
        import bitsandbytes
        from bitsandbytes import cextension
        lib = cextension.lib
        native = lib.__dict__.get("_lib")
        report["bitsandbytes"].update(ok=True, backend=getattr(cextension, "BNB_BACKEND", None),
                                      library=getattr(native, "_name", None),
                                      compiledWithCuda=bool(getattr(type(lib), "compiled_with_cuda", False)),
                                      libraryError=lib.__dict__.get("error_msg"))
    except Exception as error:
        report["bitsandbytes"]["error"] = short(error)
if report["torchvision"]["present"]:
    try:
        import torchvision
        report["torchvision"].update(ok=True, version=torchvision.__version__)
    except Exception as error:
        report["torchvision"]["error"] = short(error)
out.write("\\n" + json.dumps(report) + "\\n")
out.flush()
`;

export type DoctorProbeResult = { ok: true; probe: DoctorProbe } | { ok: false; error: string };

/** Runs the doctor's script in `python`; never throws for a broken interpreter, it says what went wrong. @internal */
export async function runDoctorProbe(python: string, options: { signal?: AbortSignal | undefined; timeoutMs?: number } = {}): Promise<DoctorProbeResult> {
  const result = await execa(python, ["-c", doctorCode], {
    env: childEnvironment("worker"),
    extendEnv: false,
    reject: false,
    stdin: "ignore",
    timeout: options.timeoutMs ?? 180_000,
    ...(options.signal ? { cancelSignal: options.signal } : {}),
  });
  const last = result.stdout.trim().split("\n").at(-1) ?? "";
  let json: unknown;
  try {
    json = JSON.parse(last);
  } catch {
    json = undefined;
  }
  const parsed = DoctorProbe.safeParse(json);
  if (parsed.success) return { ok: true, probe: parsed.data };
  const detail = (result.stderr.trim().split("\n").at(-1) ?? "").trim() || result.shortMessage || "no report";
  return { ok: false, error: detail.slice(0, 500) };
}

import { AbortError, ModelLoadError } from "../errors.js";
import type { ReplicaDevice } from "../protocol/option-ranges.js";
import { runDoctorProbe } from "../runtime/doctor-probe.js";
import type { PythonEnvironment } from "../runtime/python-environment.js";

/**
 * Every CUDA device the environment's torch sees, as `cuda:N` (what `devices: "all"` means), asked of the doctor's
 * probe; CUDA_UNAVAILABLE when it sees none.
 */
export async function cudaDevices(
  environment: Pick<PythonEnvironment, "python" | "source">,
  options: { signal: AbortSignal | undefined; timeoutMs: number },
): Promise<ReplicaDevice[]> {
  const probed = await runDoctorProbe(environment, options);
  if (options.signal?.aborted) throw new AbortError(options.signal.reason);
  if (!probed.ok)
    throw new ModelLoadError(
      "CUDA_UNAVAILABLE",
      `devices: "all" could not list the CUDA devices of ${environment.python}: ${probed.error}`,
      {
        fix: 'Run `idefics2 doctor` to see what the environment\'s torch finds, or list the devices (`devices: ["cuda:0", "cuda:1"]`).',
      },
    );
  const { torch, cuda } = probed.probe;
  if (cuda.devices.length === 0) {
    const why = torch.cuda === null ? "a CPU build of torch" : `torch built for CUDA ${torch.cuda}${cuda.error ? ` (${cuda.error})` : ""}`;
    throw new ModelLoadError("CUDA_UNAVAILABLE", `devices: "all" found no CUDA device: ${environment.python} has ${why} and sees none`, {
      fix: 'Bring an interpreter with CUDA torch (`python` option, see "On a GPU" in the README) and check `nvidia-smi`, or pass devices: ["cpu"].',
    });
  }
  return cuda.devices.map((device) => `cuda:${device.index}` as const);
}

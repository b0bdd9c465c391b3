import { z } from "zod";
import { lastOutputLine } from "../printable.js";
import { runProbe } from "./run-probe.js";

/** What the doctor's probe (python/idefics2_worker/probe/doctor.py) finds by importing torch, bitsandbytes and torchvision. */
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

export type DoctorProbeResult = { ok: true; probe: DoctorProbe } | { ok: false; error: string };

/**
 * Runs the doctor's probe in an interpreter (`source` decides whether the user's PYTHONPATH follows the package's,
 * as for the worker); never throws for a broken interpreter, it says what went wrong. @internal
 */
export async function runDoctorProbe(
  environment: { python: string; source?: string | undefined },
  options: { signal?: AbortSignal | undefined; timeoutMs?: number } = {},
): Promise<DoctorProbeResult> {
  const result = await runProbe(environment, "doctor", { signal: options.signal, timeoutMs: options.timeoutMs ?? 180_000 });
  const last = result.stdout.trim().split("\n").at(-1) ?? "";
  let json: unknown;
  try {
    json = JSON.parse(last);
  } catch {
    json = undefined;
  }
  const parsed = DoctorProbe.safeParse(json);
  if (parsed.success) return { ok: true, probe: parsed.data };
  const detail = lastOutputLine(result.stderr, 500) || lastOutputLine(result.shortMessage ?? "", 500) || "no report";
  return { ok: false, error: detail };
}

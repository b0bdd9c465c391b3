import path from "node:path";
import { z } from "zod";
import { packageRoot } from "../runtime/package-root.js";
import { pythonModuleCommand } from "../runtime/python-module-command.js";
import type { TeacherForcedStep } from "./judge-teacher-forcing.js";
import type { PythonProgram } from "./run-python-program.js";

/** What scripts/reference/reference.py prints. */
export const ReferenceOutput = z.object({ tokenIds: z.array(z.number().int()), text: z.string(), fullText: z.string() });
export type ReferenceOutput = z.infer<typeof ReferenceOutput>;

// JSON has no NaN or infinity: the program prints null for them, judged as a failure.
const figure = z
  .number()
  .nullable()
  .transform((value) => value ?? Number.NaN);

/** What python -m idefics2_worker.engine.teacher_forced_parity prints. */
export const TeacherForcedOutput = z.object({
  device: z.string(),
  dtype: z.string(),
  tokenIds: z.array(z.number().int()),
  steps: z.array(
    z.object({
      referenceTop1: z.number().int(),
      referenceMargin: figure,
      fastTop1: z.number().int(),
      fastMaxAbsErr: figure,
      fastRelErr: figure,
      noiseMaxAbsErr: figure,
    }) satisfies z.ZodType<TeacherForcedStep, unknown>,
  ),
});
export type TeacherForcedOutput = z.infer<typeof TeacherForcedOutput>;

/** The inputs both Python programs take: the model, a wire-shaped messages file, image paths or URLs. */
export interface ProgramInputs {
  model: string;
  messagesFile: string;
  images: readonly string[];
  quantization: "none" | "8bit" | "4bit";
  imageSplitting: boolean | undefined;
}

type Environment = { python: string; source?: string | undefined };

/** The blog's program as it ships with the package, on the SDK's interpreter and with the worker's environment. */
export function referenceProgram(environment: Environment, inputs: ProgramInputs, maxNewTokens: number): PythonProgram {
  const script = path.join(packageRoot(), "scripts", "reference", "reference.py");
  // The worker's launch spec gives the explicit environment (PYTHONPATH, no bytecode written); the script replaces the module.
  const { file, env } = pythonModuleCommand(environment, "idefics2_worker");
  return {
    program: "reference",
    title: "The reference program (scripts/reference/reference.py)",
    file,
    args: [script, ...commonArgs(inputs), "--max-new-tokens", String(maxNewTokens)],
    env: { ...env, PYTHONWARNINGS: "ignore" },
  };
}

/** The fast decoder's teacher-forced figures on the reference's tokens (python/idefics2_worker/engine/teacher_forced_parity.py). */
export function teacherForcingProgram(environment: Environment, inputs: ProgramInputs, tokens: readonly number[]): PythonProgram {
  const command = pythonModuleCommand(environment, "idefics2_worker.engine.teacher_forced_parity", [
    ...commonArgs(inputs),
    "--tokens",
    tokens.join(","),
  ]);
  return {
    program: "teacher-forcing",
    title: "The teacher-forcing program (python -m idefics2_worker.engine.teacher_forced_parity)",
    ...command,
    env: { ...command.env, PYTHONWARNINGS: "ignore" },
  };
}

function commonArgs(inputs: ProgramInputs): string[] {
  return [
    "--model",
    inputs.model,
    "--messages",
    inputs.messagesFile,
    ...inputs.images.flatMap((image) => ["--image", image]),
    "--quantization",
    inputs.quantization,
    ...(inputs.imageSplitting === false ? ["--no-image-splitting"] : []),
  ];
}

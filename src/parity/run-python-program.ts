import { execa } from "execa";
import type { z } from "zod";
import { AbortError } from "../errors.js";
import { quote } from "../runtime/check-python-versions.js";
import { ReferenceRunError, type ReferenceProgram } from "./reference-run-error.js";

/** A Python program of the check: a file to execute without a shell, its arguments, and its whole environment. */
export interface PythonProgram {
  program: ReferenceProgram;
  /** Says what it is in an error: "The reference program (scripts/reference/reference.py)". */
  title: string;
  file: string;
  args: string[];
  env: Record<string, string>;
}

/**
 * Runs a program that prints one JSON object on stdout and parses it with `schema`. A failed run, or one that
 * printed something else, throws ReferenceRunError with its stderr's tail; an aborted one AbortError. @internal
 */
export async function runPythonProgram<S extends z.ZodType>(
  command: PythonProgram,
  schema: S,
  signal: AbortSignal | undefined,
): Promise<z.output<S>> {
  if (signal?.aborted) throw new AbortError(signal.reason);
  const result = await execa(command.file, command.args, {
    env: command.env,
    extendEnv: false,
    reject: false,
    stdin: "ignore",
    ...(signal ? { cancelSignal: signal } : {}),
  });
  if (signal?.aborted) throw new AbortError(signal.reason);
  const details = {
    program: command.program,
    command: [command.file, ...command.args].map(quote).join(" "),
    exitCode: result.exitCode ?? null,
    signal: result.signal ?? null,
    stderrTail: String(result.stderr ?? "").slice(-4000),
  };
  if (result.failed) {
    const how = result.signal
      ? `was killed by ${result.signal}`
      : result.exitCode === undefined
        ? "could not start"
        : `exited with code ${result.exitCode}`;
    throw new ReferenceRunError(`${command.title} ${how}`, {
      ...details,
      stderrTail: details.stderrTail || (result.shortMessage ?? ""),
    });
  }
  const lastLine =
    String(result.stdout ?? "")
      .trim()
      .split("\n")
      .at(-1) ?? "";
  let json: unknown;
  try {
    json = JSON.parse(lastLine);
  } catch (cause) {
    throw new ReferenceRunError(`${command.title} printed no JSON result (got ${JSON.stringify(lastLine.slice(0, 80))})`, details, {
      cause,
    });
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    throw new ReferenceRunError(`${command.title} printed an unexpected result: ${parsed.error.issues[0]?.message ?? "invalid"}`, details);
  }
  return parsed.data;
}

import { Idefics2Error, type Idefics2ErrorOptions } from "../errors.js";

/** Which Python program of the check failed: the blog's program, or the teacher-forcing one of the fast-decoder check. */
export type ReferenceProgram = "reference" | "teacher-forcing";

export interface ReferenceRunDetails {
  program: ReferenceProgram;
  /** The command line that failed, to run by hand. */
  command: string;
  exitCode: number | null;
  signal: string | null;
  stderrTail: string;
}

/** A Python program of the parity check failed or printed no result; the SDK's own run is fine. */
export class ReferenceRunError extends Idefics2Error {
  override name = "ReferenceRunError";
  declare readonly code: "GENERATION_FAILED";
  readonly program: ReferenceProgram;
  readonly command: string;
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stderrTail: string;

  constructor(what: string, details: ReferenceRunDetails, options: Idefics2ErrorOptions = {}) {
    const tail = lastLine(details.stderrTail);
    super("GENERATION_FAILED", `${what}${tail ? `: ${tail}` : ""}`, {
      fix: `Run it by hand to see its whole output: ${details.command} — and \`idefics2 doctor\` to check the environment.`,
      ...options,
    });
    this.program = details.program;
    this.command = details.command;
    this.exitCode = details.exitCode;
    this.signal = details.signal;
    this.stderrTail = details.stderrTail;
  }
}

function lastLine(text: string): string {
  const lines = text.split("\n").filter((line) => line.trim() !== "");
  return (lines.at(-1) ?? "").trim().slice(0, 300);
}

import { z } from "zod";
import { describe, expect, it } from "vitest";
import { AbortError, Idefics2Error } from "../../src/errors.js";
import { ReferenceRunError } from "../../src/parity/reference-run-error.js";
import { runPythonProgram, type PythonProgram } from "../../src/parity/run-python-program.js";

const Output = z.object({ tokenIds: z.array(z.number().int()) });

// Node stands in for Python: the runner only cares about exit status, stderr and the last line of stdout.
function program(source: string): PythonProgram {
  return {
    program: "reference",
    title: "The reference program",
    file: process.execPath,
    args: ["-e", source],
    env: { PATH: process.env.PATH ?? "" },
  };
}

describe("runPythonProgram", () => {
  it("parses the last line of stdout with the schema", async () => {
    const output = await runPythonProgram(
      program(`console.log("loading"); console.log(JSON.stringify({ tokenIds: [1, 2] }))`),
      Output,
      undefined,
    );
    expect(output).toEqual({ tokenIds: [1, 2] });
  });

  it("throws ReferenceRunError with the exit code, stderr's last line and a command to run by hand", async () => {
    const failing = runPythonProgram(
      program(`console.error("Traceback ...\\nValueError: no such model"); process.exit(3)`),
      Output,
      undefined,
    );
    const error = await failing.catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ReferenceRunError);
    expect(error).toBeInstanceOf(Idefics2Error);
    expect(error).toMatchObject({
      name: "ReferenceRunError",
      code: "GENERATION_FAILED",
      program: "reference",
      exitCode: 3,
      signal: null,
      message: "The reference program exited with code 3: ValueError: no such model",
    });
    expect((error as ReferenceRunError).fix).toContain(`${process.execPath} -e`);
    expect((error as ReferenceRunError).stderrTail).toContain("Traceback");
  });

  it("throws ReferenceRunError for output that is not the expected JSON", async () => {
    await expect(runPythonProgram(program(`console.log("not json")`), Output, undefined)).rejects.toMatchObject({
      name: "ReferenceRunError",
      message: 'The reference program printed no JSON result (got "not json")',
    });
    await expect(runPythonProgram(program(`console.log(JSON.stringify({ tokenIds: "x" }))`), Output, undefined)).rejects.toThrow(
      /printed an unexpected result/,
    );
  });

  it("throws ReferenceRunError for an interpreter that does not exist", async () => {
    const missing = { ...program(""), file: "/no/such/python3" };
    await expect(runPythonProgram(missing, Output, undefined)).rejects.toMatchObject({ name: "ReferenceRunError", exitCode: null });
  });

  it("kills the program and throws AbortError when the signal fires", async () => {
    const controller = new AbortController();
    const running = runPythonProgram(program("setTimeout(() => {}, 60_000)"), Output, controller.signal);
    setTimeout(() => controller.abort(new Error("stop")), 200);
    const started = Date.now();
    await expect(running).rejects.toBeInstanceOf(AbortError);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

import { parseArgs, type ParseArgsConfig } from "node:util";
import { InvalidInputError } from "../errors.js";
import { UsageError } from "./usage-error.js";

type Options = NonNullable<ParseArgsConfig["options"]>;
type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: false }>>;

/** parseArgs with strict checking; unknown flags and missing values become a UsageError naming the flag. */
export function parseCommandLine<O extends Options>(args: string[], options: O, command: string): Parsed<O> {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error), command);
  }
}

/** Converts a flag's text to a number, or says which flag had what. */
export function numberFlag(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (value.trim() === "" || !Number.isFinite(number)) {
    throw new InvalidInputError("INVALID_OPTIONS", `--${flag} expects a number, got ${JSON.stringify(value)}`);
  }
  return number;
}

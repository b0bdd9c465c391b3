import { parseArgs, type ParseArgsConfig } from "node:util";
import { InvalidInputError } from "../errors.js";
import { MAX_QUOTED_INPUT, quotedInput } from "../printable.js";
import { UsageError } from "./usage-error.js";

type Options = NonNullable<ParseArgsConfig["options"]>;
type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: false }>>;

/** parseArgs with strict checking; unknown flags and missing values become a UsageError naming the flag. */
export function parseCommandLine<O extends Options>(args: string[], options: O, command: string): Parsed<O> {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (error) {
    throw new UsageError(shortenQuotedArgs(error instanceof Error ? error.message : String(error), args), command);
  }
}

// parseArgs quotes the argument it refused (twice, for an unknown option): each long one is cut to its start.
function shortenQuotedArgs(message: string, args: string[]): string {
  const quoted = args.flatMap((arg) => [arg, arg.split("=")[0] ?? arg]).filter((text) => text.length > MAX_QUOTED_INPUT);
  let shortened = message;
  for (const text of [...new Set(quoted)].sort((a, b) => b.length - a.length)) shortened = shortened.split(text).join(quotedInput(text));
  return shortened;
}

/** Converts a flag's text to a number, or says which flag had what. */
export function numberFlag(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (value.trim() === "" || !Number.isFinite(number)) {
    throw new InvalidInputError("INVALID_OPTIONS", `--${flag} expects a number, got ${quotedInput(JSON.stringify(value))}`);
  }
  return number;
}

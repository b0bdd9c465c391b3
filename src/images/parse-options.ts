import type { z } from "zod";
import { InvalidInputError } from "../errors.js";

// Validates an options object; the error names the option and the value received, as execa's messages do.
export function parseOptions<S extends z.ZodType>(schema: S, options: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(options ?? {});
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => {
    const name = issue.path.map(String).join(".");
    if (!name) return `${issue.message}`;
    const value = (options as Record<string, unknown>)[name];
    return `\`${name}\` ${issue.message.replace(/^Invalid input: /, "")}, got \`${String(value)}\` (${typeof value})`;
  });
  throw new InvalidInputError("INVALID_OPTIONS", `Invalid ${what} option: ${problems.join("; ")}`, {
    fix: `Check the ${what} options: sizes and times are positive integers.`,
  });
}

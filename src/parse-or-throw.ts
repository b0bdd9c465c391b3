import type { z } from "zod";
import { describeExpected } from "./describe-expected.js";
import { InvalidInputError } from "./errors.js";
import { printable, printableExcerpt } from "./printable.js";

// A refusal lists this many problems and counts the rest: input with thousands of bad items still gets one short line.
const MAX_PROBLEMS = 3;
/** Keys are quoted up to this length (what an error quotes is input, and input can be any size). @internal */
export const MAX_QUOTED_KEY = 40;

/**
 * Parses with a zod schema; on failure throws InvalidInputError naming each bad field, what it must be (the allowed
 * values of an enum, each alternative of a union) and the value received:
 * "Invalid load option: `quantization`: must be one of "none", "8bit", "4bit" or an object { mode, … } (got "3bit")".
 */
export function parseOrThrow<S extends z.ZodType>(
  schema: S,
  value: unknown,
  code: "INVALID_OPTIONS" | "INVALID_MESSAGES",
  what: string,
): z.output<S> {
  const parsed = schema.safeParse(value, { error: describeExpected });
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.flatMap((issue) => describeIssue(issue, [], value, what));
  const more = problems.length - MAX_PROBLEMS;
  const listed = problems.slice(0, MAX_PROBLEMS).join("; ");
  throw new InvalidInputError(code, `Invalid ${what}: ${listed}${more > 0 ? `; and ${more} more problem${more === 1 ? "" : "s"}` : ""}`, {
    fix:
      code === "INVALID_OPTIONS"
        ? "See the options tables in the README."
        : "Build messages with user(), assistant(), system(), image() and text().",
  });
}

// One line per problem. A union whose input matched one alternative's shape (an object form with one bad field)
// reports that alternative's own problems, which say more than the list of alternatives.
function describeIssue(issue: z.core.$ZodIssue, base: readonly PropertyKey[], root: unknown, what: string): string[] {
  const path = [...base, ...issue.path];
  if (issue.code === "invalid_union" && issue.discriminator === undefined) {
    const deeper = issue.errors.filter((issues) => issues.length > 0 && issues.every((inner) => inner.path.length > 0));
    if (deeper.length === 1) return (deeper[0] ?? []).flatMap((inner) => describeIssue(inner, path, root, what));
  }
  const where = path.length > 0 ? `\`${path.map((key) => printableExcerpt(String(key), MAX_QUOTED_KEY)).join(".")}\`` : what;
  if (issue.code === "unrecognized_keys") return [path.length > 0 ? `${where}: ${issue.message}` : issue.message];
  const received = describe(valueAt(root, path));
  return [`${where}: ${issue.message}${received === undefined ? " (missing)" : ` (got ${received})`}`];
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let current = root;
  for (const key of path) {
    if (current === null || typeof current !== "object") return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

function describe(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "number" || typeof value === "boolean" || value === null) return String(value);
  if (typeof value === "string") return printable(JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value));
  if (Array.isArray(value)) return `an array of ${value.length}`;
  return typeof value;
}

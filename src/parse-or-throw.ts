import type { z } from "zod";
import { InvalidInputError } from "./errors.js";

/** Parses with a zod schema; on failure throws InvalidInputError naming each bad field and the value received. */
export function parseOrThrow<S extends z.ZodType>(
  schema: S,
  value: unknown,
  code: "INVALID_OPTIONS" | "INVALID_MESSAGES",
  what: string,
): z.output<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => {
    const path = issue.path.map(String).join(".");
    const received = path ? describe(valueAt(value, issue.path)) : describe(value);
    return `${path ? `\`${path}\`` : what}: ${issue.message}${received === undefined ? "" : ` (got ${received})`}`;
  });
  throw new InvalidInputError(code, `Invalid ${what}: ${problems.join("; ")}`, {
    fix:
      code === "INVALID_OPTIONS"
        ? "See the options tables in the README."
        : "Build messages with user(), assistant(), system(), image() and text().",
  });
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
  if (typeof value === "string") return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (Array.isArray(value)) return `an array of ${value.length}`;
  return typeof value;
}

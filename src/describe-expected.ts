import { z } from "zod";
import { printableExcerpt } from "./printable.js";

// zod's per-parse error map: says what a value must be, from the schema that refused it. A message a schema sets
// itself (`.min(1, "give at least one message")`) outranks this map, and codes it does not know keep zod's.

/** The expectation a refused value failed, as "must be …", or "unknown key …" for a strict object. @internal */
export const describeExpected: z.core.$ZodErrorMap = (issue) => {
  switch (issue.code) {
    case "invalid_value":
      return `must be ${oneOf(issue.values.map(quote))}`;
    case "invalid_union":
      if (issue.discriminator !== undefined && Array.isArray(issue.options)) return `must be ${oneOf(issue.options.map(quote))}`;
      return expectation(issue.inst, issue.errors);
    case "unrecognized_keys":
      return unknownKeys(issue.keys, issue.inst);
    case "invalid_type":
    case "too_small":
    case "too_big":
    case "not_multiple_of":
      return expectation(issue.schema ?? issue.inst) ?? fallback(issue);
    default:
      return undefined;
  }
};

// What a schema accepts, read from its JSON Schema; each union alternative zod cannot express in JSON Schema
// (instanceof, custom) is described by the message it refused the value with.
function expectation(schema: unknown, alternatives?: readonly (readonly z.core.$ZodIssue[])[]): string | undefined {
  if (!(schema instanceof z.ZodType)) return undefined;
  let json: JsonSchema;
  try {
    json = z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as JsonSchema;
  } catch {
    return undefined;
  }
  const branches = json.anyOf ?? json.oneOf;
  const items = branches
    ? branches.flatMap((branch, index) => {
        const described = accepted(branch);
        if (described.length > 0) return described;
        const refusal = alternatives?.[index]?.[0]?.message;
        return refusal ? [refusal.replace(/^(must be|expected) /, "")] : [];
      })
    : accepted(json);
  return items.length > 0 ? `must be ${oneOf(items)}` : undefined;
}

interface JsonSchema {
  type?: string;
  enum?: unknown[];
  const?: unknown;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  properties?: Record<string, unknown>;
  items?: JsonSchema;
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minItems?: number;
  maxItems?: number;
}

// The values or kinds of value a JSON Schema accepts, each a phrase: `"4bit"`, `an integer from 1 to 64`.
function accepted(json: JsonSchema): string[] {
  if (json.const !== undefined) return [quote(json.const)];
  if (json.enum) return json.enum.map(quote);
  const branches = json.anyOf ?? json.oneOf;
  if (branches) return branches.flatMap(accepted);
  switch (json.type) {
    case "object":
      return [json.properties ? `an object { ${Object.keys(json.properties).join(", ")} }` : "an object"];
    case "string":
      if (json.pattern) return [`a string matching /${json.pattern}/`];
      if (json.maxLength !== undefined)
        return [`a ${json.minLength ? "non-empty " : ""}string of at most ${count(json.maxLength)} characters`];
      return [json.minLength ? "a non-empty string" : "a string"];
    case "number":
    case "integer":
      return [numberRange(json)];
    case "boolean":
      return ["true or false"];
    case "null":
      return ["null"];
    case "array": {
      const count = between(json.minItems, json.maxItems);
      const each = json.items ? accepted(json.items) : [];
      const items = json.maxItems === 1 || (json.maxItems === undefined && json.minItems === 1) ? "item" : "items";
      return [`an array${count ? ` of ${count} ${items}` : ""}${each.length > 0 ? `, each ${oneOf(each)}` : ""}`];
    }
    default:
      return [];
  }
}

function numberRange(json: JsonSchema): string {
  const noun = json.type === "integer" ? "integer" : "number";
  // zod bounds every integer to the safe ones; that bound goes without saying.
  const min = json.minimum === Number.MIN_SAFE_INTEGER ? undefined : json.minimum;
  const max = json.maximum === Number.MAX_SAFE_INTEGER ? undefined : json.maximum;
  const { exclusiveMinimum: above, exclusiveMaximum: below } = json;
  if (max === undefined && below === undefined) {
    if (min === 0) return `a non-negative ${noun}`;
    if (above === 0 || (min === 1 && noun === "integer")) return `a positive ${noun}`;
  }
  const bounds = [
    min !== undefined && max !== undefined ? `from ${count(min)} to ${count(max)}` : undefined,
    above !== undefined ? `greater than ${count(above)}` : undefined,
    min !== undefined && max === undefined ? `at least ${count(min)}` : undefined,
    max !== undefined && min === undefined ? `at most ${count(max)}` : undefined,
    below !== undefined ? `less than ${count(below)}` : undefined,
  ].filter((bound) => bound !== undefined);
  return `${noun === "integer" ? "an" : "a"} ${noun}${bounds.length > 0 ? ` ${bounds.join(" and ")}` : ""}`;
}

function between(min: number | undefined, max: number | undefined): string | undefined {
  if (min !== undefined && max !== undefined) return `${count(min)} to ${count(max)}`;
  if (min !== undefined && min > 0) return `at least ${count(min)}`;
  if (max !== undefined) return `at most ${count(max)}`;
  return undefined;
}

// 65,536 rather than 65536, as the README writes them.
function count(value: number): string {
  return Math.abs(value) >= 10_000 ? value.toLocaleString("en-US") : String(value);
}

// Without a schema to read (a check on its own): the bound or type the issue itself names.
function fallback(issue: z.core.$ZodRawIssue): string | undefined {
  switch (issue.code) {
    case "invalid_type":
      return `must be ${issue.expected === "int" ? "an integer" : /^[aeiou]/.test(issue.expected) ? `an ${issue.expected}` : `a ${issue.expected}`}`;
    case "too_small":
      return `must be ${issue.inclusive ? "at least" : "greater than"} ${issue.minimum}`;
    case "too_big":
      return `must be ${issue.inclusive ? "at most" : "less than"} ${issue.maximum}`;
    default:
      return undefined;
  }
}

// Unknown keys named in one refusal; the rest are counted. Each is quoted escaped and cut short (keys are input).
const MAX_KEYS_NAMED = 5;
const MAX_KEY_QUOTED = 40;

// "unknown key `modle` (did you mean `model`?)": the keys of the object that refused them are the candidates.
function unknownKeys(keys: readonly string[], schema: unknown): string {
  const known = schema instanceof z.ZodObject ? Object.keys(schema.shape) : [];
  const named = keys.slice(0, MAX_KEYS_NAMED).map((key) => {
    const near = closest(key, known);
    return `\`${printableExcerpt(key, MAX_KEY_QUOTED)}\`${near ? ` (did you mean \`${near}\`?)` : ""}`;
  });
  const more = keys.length - named.length;
  return `unknown key${keys.length === 1 ? "" : "s"} ${named.join(", ")}${more > 0 ? ` and ${more} more` : ""}`;
}

// The known key a typo most likely meant: the same but for case, `_` and `-`, or at most two edits away.
function closest(key: string, known: readonly string[]): string | undefined {
  const plain = (name: string) => name.toLowerCase().replace(/[-_]/g, "");
  const typed = plain(key);
  let best: { name: string; distance: number } | undefined;
  for (const name of known) {
    // Lengths more than two apart are more than two edits apart: a huge key costs nothing.
    if (Math.abs(typed.length - plain(name).length) > 2) continue;
    const distance = editDistance(typed, plain(name));
    if (distance <= 2 && (!best || distance < best.distance)) best = { name, distance };
  }
  return best?.name;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

function oneOf(items: readonly string[]): string {
  if (items.length <= 2) return items.join(" or ");
  return `one of ${items.slice(0, -1).join(", ")} or ${items.at(-1)}`;
}

function quote(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

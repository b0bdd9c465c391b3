import { z } from "zod";
import { InvalidInputError, StructuredOutputError } from "./errors.js";
import { MAX_GRAMMAR_SOURCE, type GenerateResult, type WireGrammar } from "./protocol/messages.js";
import { WellFormedString } from "./protocol/option-ranges.js";

// Structured output: a call's `schema`, `choices` or `regex` becomes the grammar the worker constrains decoding to
// (llguidance, token by token), and the answer's text becomes `result.object`, parsed and checked again here.

/** A JSON Schema written as a plain object (not a zod schema); the answer's `object` is then typed `unknown`. */
export type JsonSchemaObject = { readonly [keyword: string]: unknown };

/** What `schema` takes: a zod schema, whose output type types `result.object`, or a plain JSON Schema object. */
export type OutputSchema = z.ZodType | JsonSchemaObject;

/** The most choices one call may list. */
export const MAX_CHOICES = 1024;

/** The structured-output options of generate(), stream() and a chat turn; at most one of them per call. */
export interface StructureOptions {
  /**
   * The answer is JSON valid against this schema, by construction: a zod schema (converted with
   * `z.toJSONSchema`; `result.object` is its output type) or a plain JSON Schema object (`result.object` is
   * `unknown`). The JSON is written compactly. A schema the engine cannot compile is `INVALID_OPTIONS`, naming the
   * construct; an answer cut off by `maxNewTokens` rejects with `StructuredOutputError` (`INCOMPLETE_STRUCTURE`).
   */
  schema?: OutputSchema;
  /** The answer is exactly one of these strings (1–1,024 non-empty strings); `result.object` is the one chosen. */
  choices?: readonly string[];
  /** The whole answer matches this regular expression (Rust `regex` syntax, as llguidance reads it); `result.object` is the text. */
  regex?: string;
}

/** The type of `result.object` for call options `O`: the schema's output, the union of the choices, or a string. */
export type StructuredObject<O> = O extends { schema: infer S }
  ? S extends z.ZodType
    ? z.output<S>
    : unknown
  : O extends { choices: readonly (infer C extends string)[] }
    ? C
    : O extends { regex: string }
      ? string
      : never;

/** A generation's result; with `schema`, `choices` or `regex` it also carries `object`, the parsed, checked answer. */
export type StructuredResult<O> = [StructuredObject<O>] extends [never]
  ? GenerateResult
  : GenerateResult & {
      /** The answer parsed (JSON for a schema) and checked: a whole, valid value, never part of one. */
      object: StructuredObject<O>;
    };

/** How a call's structure reaches the worker and comes back as `object`. */
export interface Structure {
  grammar: WireGrammar;
  /** Parses and checks the answer; throws StructuredOutputError when it is not a whole, valid value. */
  finish(result: GenerateResult): GenerateResult & { object: unknown };
}

const ChoicesOption = z.array(WellFormedString.min(1)).min(1).max(MAX_CHOICES);
const RegexOption = WellFormedString.min(1).max(MAX_GRAMMAR_SOURCE);

function isZodSchema(value: unknown): value is z.ZodType {
  return value instanceof z.ZodType || (typeof value === "object" && value !== null && "_zod" in value && "safeParse" in value);
}

function refuse(message: string, fix: string): never {
  throw new InvalidInputError("INVALID_OPTIONS", message, { fix });
}

/**
 * The call's structure, or undefined without one; a wrong or doubled option, or one beside `minNewTokens`, is
 * INVALID_OPTIONS. @internal
 */
export function resolveStructure(options: StructureOptions & { minNewTokens?: number | undefined }): Structure | undefined {
  const given = (["schema", "choices", "regex"] as const).filter((key) => options[key] !== undefined);
  if (given.length === 0) return undefined;
  if (given.length > 1) {
    refuse(
      `Only one of \`schema\`, \`choices\` and \`regex\` may be given, got ${given.map((key) => `\`${key}\``).join(" and ")}`,
      "Pick one form of structured output per call.",
    );
  }
  // The end of the answer is forbidden before minNewTokens, even where the grammar allows nothing else.
  if ((options.minNewTokens ?? 0) > 0) {
    refuse(
      `\`minNewTokens\` cannot be combined with \`${given[0]}\`: it forbids the end of the answer before ${options.minNewTokens} tokens, so it can force tokens past the end of a complete structured answer`,
      "Leave `minNewTokens` out (or 0) for a structured answer; to make it longer, say so in the structure (minLength, minItems, a longer pattern).",
    );
  }
  if (options.choices !== undefined) return choicesStructure(options.choices);
  if (options.regex !== undefined) {
    const parsed = RegexOption.safeParse(options.regex);
    if (!parsed.success)
      refuse(
        `Invalid generation option: \`regex\`: must be a non-empty string of at most ${MAX_GRAMMAR_SOURCE} characters`,
        "Pass the pattern as a string.",
      );
    return { grammar: { type: "regex", source: parsed.data }, finish: (result) => ({ ...checkComplete(result), object: result.text }) };
  }
  return schemaStructure(options.schema);
}

function choicesStructure(choices: unknown): Structure {
  const parsed = ChoicesOption.safeParse(choices);
  if (!parsed.success) {
    refuse(
      `Invalid generation option: \`choices\`: must be 1 to ${MAX_CHOICES} non-empty strings`,
      'Pass the answers to choose from, as `choices: ["red", "green"]`.',
    );
  }
  const list = parsed.data;
  const source = list.map(escapeRegex).join("|");
  if (source.length > MAX_GRAMMAR_SOURCE)
    refuse(
      `Invalid generation option: \`choices\`: together longer than ${MAX_GRAMMAR_SOURCE} characters`,
      "List fewer or shorter choices.",
    );
  return {
    grammar: { type: "regex", source },
    finish(result) {
      checkComplete(result);
      if (!list.includes(result.text)) invalid(result, `The answer is none of the ${list.length} choices`);
      return { ...result, object: result.text };
    },
  };
}

function schemaStructure(schema: unknown): Structure {
  let jsonSchema: unknown;
  let check: z.ZodType | undefined;
  if (isZodSchema(schema)) {
    check = schema;
    try {
      jsonSchema = z.toJSONSchema(schema, { target: "draft-2020-12", io: "output", unrepresentable: "throw" });
    } catch (error) {
      refuse(
        `Invalid generation option: \`schema\`: it has no JSON Schema form (${(error as Error).message})`,
        "Use only zod types JSON can carry: no dates, bigints, maps, sets, functions or transforms.",
      );
    }
  } else if (typeof schema === "object" && schema !== null && !Array.isArray(schema)) {
    jsonSchema = schema;
    try {
      check = z.fromJSONSchema(schema as Parameters<typeof z.fromJSONSchema>[0]);
    } catch {
      // A schema zod cannot read is still enforced by the worker's grammar; only the second check is skipped.
      check = undefined;
    }
  } else {
    refuse(
      "Invalid generation option: `schema`: must be a zod schema or a JSON Schema object",
      'Pass z.object({...}) or a JSON Schema such as { type: "object", properties: {...} }.',
    );
  }
  let source: string;
  try {
    source = JSON.stringify(jsonSchema);
  } catch (error) {
    refuse(
      `Invalid generation option: \`schema\`: it is not JSON (${(error as Error).message})`,
      "Pass a JSON Schema made of plain objects, arrays, strings, numbers and booleans.",
    );
  }
  if (source.length > MAX_GRAMMAR_SOURCE)
    refuse(`Invalid generation option: \`schema\`: its JSON is longer than ${MAX_GRAMMAR_SOURCE} characters`, "Use a smaller schema.");
  return {
    grammar: { type: "json_schema", source },
    finish(result) {
      checkComplete(result);
      let value: unknown;
      try {
        value = JSON.parse(result.text);
      } catch (error) {
        invalid(result, `The answer is not JSON: ${(error as Error).message}`);
      }
      if (check === undefined) return { ...result, object: value };
      const parsed = check.safeParse(value);
      if (!parsed.success) invalid(result, `The answer does not match the schema: ${z.prettifyError(parsed.error).replace(/\s+/g, " ")}`);
      return { ...result, object: parsed.data };
    },
  };
}

function checkComplete(result: GenerateResult): GenerateResult {
  if (result.finishReason === "incomplete_structure") {
    throw new StructuredOutputError(
      "INCOMPLETE_STRUCTURE",
      `The structured answer was cut off by maxNewTokens after ${result.usage.completionTokens} tokens, before it was complete`,
      { text: result.text, result },
      { fix: "Raise `maxNewTokens`, or bound the schema (maxLength, maxItems) so the answer fits." },
    );
  }
  return result;
}

function invalid(result: GenerateResult, message: string): never {
  throw new StructuredOutputError(
    "INVALID_STRUCTURE",
    message,
    { text: result.text, result },
    {
      fix: "The error's `text` holds the answer; a stop string can end it early.",
    },
  );
}

// Rust regex syntax: these are its metacharacters, each escaped by a backslash (regex_syntax::escape).
function escapeRegex(text: string): string {
  return text.replace(/[\\.+*?()|[\]{}^$#&\-~]/g, "\\$&");
}

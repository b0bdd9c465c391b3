import { z } from "zod";
import type { JsonSchemaObject } from "../structured-output.js";

// OpenAI's `response_format` as the SDK's `schema`: JSON mode is any JSON object, a JSON Schema (Structured Outputs)
// is itself. llguidance enforces either token by token whether `strict` is set or not: the answer always fits.

/** `json_schema.name` as OpenAI allows it. */
const SchemaName = z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, "must be 1 to 64 characters of a-z, A-Z, 0-9, _ and -");

/** `response_format` of a chat completion request. @internal */
export const ResponseFormat = z.discriminatedUnion(
  "type",
  [
    z.strictObject({ type: z.literal("text") }),
    z.strictObject({ type: z.literal("json_object") }),
    z.strictObject({
      type: z.literal("json_schema"),
      json_schema: z.strictObject({
        name: SchemaName,
        schema: z.record(z.string(), z.unknown()),
        strict: z.boolean().nullish(),
        // Guidance for a model that reads it; the grammar already holds the answer to the schema.
        description: z.string().nullish(),
      }),
    }),
  ],
  'must be { type: "text" }, { type: "json_object" } or { type: "json_schema", json_schema: { name, schema } }',
);
export type ResponseFormat = z.output<typeof ResponseFormat>;

/** JSON mode's schema: a JSON object whose keys and values are free. */
export const ANY_JSON_OBJECT: JsonSchemaObject = { type: "object" };

/** The schema a response format asks for, and the name its errors quote; undefined for plain text. @internal */
export interface ResponseSchema {
  /** `json_schema.name`, or `json_object` for JSON mode. */
  name: string;
  schema: JsonSchemaObject;
}

/** The SDK's schema for a parsed `response_format`. @internal */
export function responseSchema(format: ResponseFormat | null | undefined): ResponseSchema | undefined {
  if (!format || format.type === "text") return undefined;
  if (format.type === "json_object") return { name: "json_object", schema: ANY_JSON_OBJECT };
  return { name: format.json_schema.name, schema: format.json_schema.schema };
}

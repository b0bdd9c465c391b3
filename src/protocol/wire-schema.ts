import { z } from "zod";
import {
  GenerateParams,
  GenerateResult,
  InfoResult,
  LoadParams,
  LoadResult,
  MemoryUse,
  NoParams,
  PingResult,
  ProgressEventData,
  QuantizationParams,
  ReleaseMemoryResult,
  Timings,
  TokenEventData,
  Usage,
  WireGenerationOptions,
  WireGrammar,
  WireImage,
  WireImagePart,
  WireMessage,
  WireTextPart,
  WorkerErrorPayload,
} from "./messages.js";

// The wire contract as JSON Schema, generated from the zod schemas: committed as docs/wire-schema.json (`npm run
// wire-schema` rewrites it), checked against the Python worker's parser by python/tests/protocol/test_wire_contract.py.

/** Every named shape, in the order the file lists them; nested ones are `$ref`s to these. */
const definitions = {
  LoadParams,
  QuantizationParams,
  GenerateParams,
  WireMessage,
  WireImagePart,
  WireTextPart,
  WireImage,
  WireGenerationOptions,
  WireGrammar,
  NoParams,
  PingResult,
  LoadResult,
  MemoryUse,
  GenerateResult,
  Usage,
  Timings,
  InfoResult,
  ReleaseMemoryResult,
  TokenEventData,
  ProgressEventData,
  WorkerErrorPayload,
} satisfies Record<string, z.ZodType>;

type Definition = keyof typeof definitions;

const methods: Record<string, { params: Definition; result: Definition }> = {
  ping: { params: "NoParams", result: "PingResult" },
  load: { params: "LoadParams", result: "LoadResult" },
  generate: { params: "GenerateParams", result: "GenerateResult" },
  info: { params: "NoParams", result: "InfoResult" },
  releaseMemory: { params: "NoParams", result: "ReleaseMemoryResult" },
};

const events: Record<string, Definition> = { token: "TokenEventData", progress: "ProgressEventData" };

const ref = (name: Definition) => ({ $ref: `#/$defs/${name}` });

/** The contract: each method's params and result, each event's data and the error body, as one JSON Schema document. */
export function wireSchema(): Record<string, unknown> {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(definitions)) registry.add(schema, { id });
  // "input": what a receiver accepts, so a key with a default is optional.
  const { schemas } = z.toJSONSchema(registry, { io: "input", target: "draft-2020-12", uri: (id) => `#/$defs/${id}` });
  const defs = Object.fromEntries(
    Object.keys(definitions).map((id) => {
      const { $schema: _schema, $id: _id, id: _name, ...rest } = schemas[id] as Record<string, unknown>;
      return [id, rest];
    }),
  );
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    title: "idefics2 worker protocol, version 1",
    description:
      "Generated from src/protocol/messages.ts by `npm run wire-schema`; do not edit. Frames and methods: docs/PROTOCOL.md. Params are what the worker accepts; results, events and errors what the SDK accepts.",
    "x-methods": Object.fromEntries(
      Object.entries(methods).map(([name, { params, result }]) => [name, { params: ref(params), result: ref(result) }]),
    ),
    "x-events": Object.fromEntries(Object.entries(events).map(([name, data]) => [name, { data: ref(data) }])),
    "x-error": ref("WorkerErrorPayload"),
    $defs: defs,
  };
}

/** The committed file's exact text. */
export function renderWireSchema(): string {
  return `${JSON.stringify(wireSchema(), null, 2)}\n`;
}

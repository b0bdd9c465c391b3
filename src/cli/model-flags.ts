import { type LoadOptions, QuantizationMode } from "../options.js";
import { parseOrThrow } from "../parse-or-throw.js";
import { numberFlag } from "./command-line.js";
import { UsageError } from "./usage-error.js";

/** The flags that choose and load the model, shared by the commands that load one. */
export const modelFlags = {
  model: { type: "string" },
  quantization: { type: "string" },
  "device-map": { type: "string" },
  dtype: { type: "string" },
  "image-splitting": { type: "boolean" },
  "no-image-splitting": { type: "boolean" },
  "longest-edge": { type: "string" },
  python: { type: "string" },
} as const;

export const MODEL_FLAGS_USAGE = `  --model DIR_OR_ID          a save_pretrained folder or a hub id (default: the embedded tiny model)
  --quantization MODE        none | 8bit | 4bit (default none)
  --device-map MAP           auto | cpu | cuda | cuda:N (default auto)
  --dtype DTYPE              auto | float32 | bfloat16 | float16 (default auto)
  --image-splitting / --no-image-splitting
  --longest-edge N
  --python PATH              use this interpreter as it is`;

type ModelFlagValues = { [Flag in keyof typeof modelFlags]?: (typeof modelFlags)[Flag]["type"] extends "boolean" ? boolean : string };

/** Load options from the model flags; what is not given is left to load()'s defaults. */
export function loadOptionsFrom(values: ModelFlagValues, command: string): LoadOptions {
  const quantization =
    values.quantization === undefined
      ? undefined
      : parseOrThrow(QuantizationMode, values.quantization, "INVALID_OPTIONS", "--quantization");
  if (values["image-splitting"] && values["no-image-splitting"]) {
    throw new UsageError("--image-splitting and --no-image-splitting contradict each other", command);
  }
  const imageSplitting = values["image-splitting"] ? true : values["no-image-splitting"] ? false : undefined;
  // The values are checked by load() itself, which names the flag's option in its error.
  return withoutUndefined({
    model: values.model,
    quantization,
    deviceMap: values["device-map"] as LoadOptions["deviceMap"],
    dtype: values.dtype as LoadOptions["dtype"],
    imageSplitting,
    longestEdge: numberFlag("longest-edge", values["longest-edge"]),
    python: values.python,
  });
}

/** `value` without its undefined entries, so a flag not given leaves the option to its default. */
export function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, entry]) => entry !== undefined)) as T;
}

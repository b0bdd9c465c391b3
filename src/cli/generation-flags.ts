import type { GenerationOptions } from "../options.js";
import { numberFlag } from "./command-line.js";
import { withoutUndefined } from "./model-flags.js";

/** The flags of generation options, shared by generate and chat. */
export const generationFlags = {
  "max-new-tokens": { type: "string" },
  "min-new-tokens": { type: "string" },
  "do-sample": { type: "boolean" },
  temperature: { type: "string" },
  "top-p": { type: "string" },
  "top-k": { type: "string" },
  "repetition-penalty": { type: "string" },
  "no-repeat-ngram-size": { type: "string" },
  "num-beams": { type: "string" },
  seed: { type: "string" },
  stop: { type: "string", multiple: true },
  "timeout-ms": { type: "string" },
} as const;

export const GENERATION_FLAGS_USAGE = `  --max-new-tokens N         (default 500)
  --min-new-tokens N  --do-sample  --temperature X  --top-p X  --top-k N
  --repetition-penalty X  --no-repeat-ngram-size N  --num-beams N  --seed N  --stop TEXT (repeatable)
  --timeout-ms N`;

type GenerationFlagValues = {
  [Flag in keyof typeof generationFlags]?: (typeof generationFlags)[Flag]["type"] extends "boolean"
    ? boolean
    : "multiple" extends keyof (typeof generationFlags)[Flag]
      ? string[]
      : string;
};

/** Generation options (and the call's timeout) from the flags; what is not given is left to the defaults. */
export function generationOptionsFrom(values: GenerationFlagValues): GenerationOptions & { timeoutMs?: number } {
  return withoutUndefined({
    maxNewTokens: numberFlag("max-new-tokens", values["max-new-tokens"]),
    minNewTokens: numberFlag("min-new-tokens", values["min-new-tokens"]),
    doSample: values["do-sample"],
    temperature: numberFlag("temperature", values.temperature),
    topP: numberFlag("top-p", values["top-p"]),
    topK: numberFlag("top-k", values["top-k"]),
    repetitionPenalty: numberFlag("repetition-penalty", values["repetition-penalty"]),
    noRepeatNgramSize: numberFlag("no-repeat-ngram-size", values["no-repeat-ngram-size"]),
    numBeams: numberFlag("num-beams", values["num-beams"]),
    seed: numberFlag("seed", values.seed),
    stopStrings: values.stop,
    timeoutMs: numberFlag("timeout-ms", values["timeout-ms"]),
  });
}

import type { GenerateParams } from "../../src/protocol/messages.js";

/** A streaming text-only generate request as the SDK sends it, every option left to the worker. */
export function textGenerateParams(text: string, maxNewTokens: number): GenerateParams {
  return {
    messages: [{ role: "user", content: [{ type: "text", text }] }],
    images: [],
    options: {
      maxNewTokens,
      minNewTokens: null,
      doSample: null,
      temperature: null,
      topP: null,
      topK: null,
      repetitionPenalty: null,
      noRepeatNgramSize: null,
      numBeams: null,
      seed: null,
      stopStrings: null,
      grammar: null,
    },
    stream: true,
    reserveNewTokens: false,
  };
}

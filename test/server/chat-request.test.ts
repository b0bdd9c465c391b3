import { describe, expect, it } from "vitest";
import { parseChatRequest } from "../../src/server/chat-request.js";
import { StopHoldback } from "../../src/server/stop-holdback.js";

// The server's request mapping and stop-string cutting, without a model.

const hello = [{ role: "user", content: "Hello" }];

describe("parseChatRequest", () => {
  it("maps OpenAI's parameters to the SDK's: greedy unless sampling is asked for", () => {
    expect(parseChatRequest({ messages: hello }, 500).options).toEqual({ maxNewTokens: 500 });
    expect(parseChatRequest({ messages: hello, temperature: 0, max_tokens: 9 }, 500).options).toEqual({ maxNewTokens: 9, doSample: false });
    expect(
      parseChatRequest({ messages: hello, temperature: 0.7, top_p: 0.9, seed: 3, stop: "x", max_completion_tokens: 7, max_tokens: 9 }, 500)
        .options,
    ).toEqual({ maxNewTokens: 7, doSample: true, temperature: 0.7, topP: 0.9, seed: 3, stopStrings: ["x"] });
    expect(parseChatRequest({ messages: hello, top_k: 5 }, 500).options).toEqual({ maxNewTokens: 500, doSample: true, topK: 5 });
    expect(parseChatRequest({ messages: hello, temperature: 0, top_p: 0.5 }, 500).options).toEqual({ maxNewTokens: 500, doSample: false });
  });

  it("turns content strings and parts into the SDK's messages; developer is a system turn", () => {
    const request = parseChatRequest(
      {
        messages: [
          { role: "developer", content: "Be brief." },
          {
            role: "user",
            content: [
              { type: "text", text: "What?" },
              { type: "image_url", image_url: { url: "https://example.org/a.png", detail: "low" } },
            ],
          },
        ],
        stream: true,
        stream_options: { include_usage: true },
        user: "someone",
        n: 1,
        tools: [],
      },
      500,
    );
    expect(request.messages).toEqual([
      { role: "system", content: [{ type: "text", text: "Be brief." }] },
      {
        role: "user",
        content: [
          { type: "text", text: "What?" },
          { type: "image", source: "https://example.org/a.png" },
        ],
      },
    ]);
    expect([request.stream, request.includeUsage]).toEqual([true, true]);
  });

  it("refuses min_tokens above max_tokens and a temperature below 0", () => {
    expect(() => parseChatRequest({ messages: hello, max_tokens: 2, min_tokens: 3 }, 500)).toThrow(/min_tokens/);
    expect(() => parseChatRequest({ messages: hello, temperature: -1 }, 500)).toThrow(/temperature/);
  });

  it("turns a JSON response_format into the SDK's schema: JSON mode is any object", () => {
    const schema = { type: "object", properties: { colour: { type: "string" } }, required: ["colour"] };
    const request = parseChatRequest(
      {
        messages: hello,
        response_format: { type: "json_schema", json_schema: { name: "Shape_1-a", schema, strict: true, description: "x" } },
      },
      500,
    );
    expect(request.options).toEqual({ maxNewTokens: 500, schema });
    expect(request.responseSchema).toEqual({ name: "Shape_1-a", schema });
    expect(parseChatRequest({ messages: hello, response_format: { type: "json_object" } }, 500).options).toEqual({
      maxNewTokens: 500,
      schema: { type: "object" },
    });
    const text = parseChatRequest({ messages: hello, response_format: { type: "text" } }, 500);
    expect([text.options, text.responseSchema]).toEqual([{ maxNewTokens: 500 }, undefined]);
  });

  it.each([
    [{ type: "json_schema", json_schema: { name: "has space", schema: {} } }, "response_format.json_schema.name"],
    [{ type: "json_schema", json_schema: { name: "n".repeat(65), schema: {} } }, "response_format.json_schema.name"],
    [{ type: "json_schema", json_schema: { schema: {} } }, "response_format.json_schema.name"],
    [{ type: "json_schema", json_schema: { name: "n", schema: [] } }, "response_format.json_schema.schema"],
    [{ type: "json_schema", json_schema: { name: "n", schema: {}, extra: 1 } }, "response_format.json_schema"],
    [{ type: "grammar", grammar: "root ::= x" }, "response_format.type"],
  ])("refuses response_format %j naming `%s`", (format, param) => {
    expect(() => parseChatRequest({ messages: hello, response_format: format }, 500)).toThrow(
      expect.objectContaining({ status: 400, param, code: "invalid_value" }),
    );
  });

  it("refuses min_tokens with a JSON response_format: it could force tokens past the JSON's end", () => {
    expect(() => parseChatRequest({ messages: hello, min_tokens: 5, response_format: { type: "json_object" } }, 500)).toThrow(
      expect.objectContaining({ status: 400, param: "min_tokens", message: expect.stringMatching(/response_format/) }),
    );
    expect(parseChatRequest({ messages: hello, min_tokens: 0, response_format: { type: "json_object" } }, 500).options.minNewTokens).toBe(
      0,
    );
  });
});

describe("StopHoldback", () => {
  const run = (stops: string[], deltas: string[], finish: "stop" | "length" | "stop_string") => {
    const holdback = new StopHoldback(stops);
    const sent = deltas.map((delta) => holdback.push(delta));
    const { rest, content, cut } = holdback.finish(deltas.join(""), finish);
    return { sent, streamed: sent.join("") + rest, content, cut };
  };

  it("sends everything at once without stop strings", () => {
    expect(run([], ["a", "b"], "stop").sent).toEqual(["a", "b"]);
  });

  it("never sends part of a stop string that spans deltas, nor what followed it in the last token", () => {
    const { sent, streamed, content, cut } = run(["END"], ["Hello", " wor", "ld E", "ND and"], "stop_string");
    expect(sent.join("")).not.toContain("E");
    expect(streamed).toBe("Hello world ");
    expect([content, cut]).toEqual(["Hello world ", "END and"]);
  });

  it("keeps the whole text when the answer did not end on a stop string, and never splits a surrogate pair", () => {
    const { sent, streamed } = run(["zz"], ["ab😀", "cd"], "length");
    expect(streamed).toBe("ab😀cd");
    for (const piece of sent) expect(piece).not.toMatch(/\p{Cs}/u);
  });
});

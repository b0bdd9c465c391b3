import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { image, user } from "../../src/messages.js";
import { Idefics2, type GenerationResult } from "../../src/model.js";
import { createServer, type Idefics2Server } from "../../src/server/index.js";
import { demoFirst, demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { dataUrl, errorOf, metricValue, openAiBlog, sdkBlog, servePictures, waitUntil } from "./server-helpers.js";

// `idefics2 serve`'s server in this process, on the embedded model, through the real OpenAI clients (npm and Python):
// one model and one server for the whole file. The picture URLs are served on 127.0.0.1, so this server is started
// with the private-network guard off, explicitly (serve-cli.test.ts shows it on by default).

const KEY = "test-key-0123456789";
let model: Idefics2;
let server: Idefics2Server;
let pictures: Awaited<ReturnType<typeof servePictures>>;
let client: OpenAI;
let local: GenerationResult;

beforeAll(async () => {
  model = await Idefics2.load({ python: testPython() });
  server = await createServer(model, { port: 0, apiKey: KEY, images: { blockPrivateNetwork: false }, maxBodyBytes: 1024 * 1024 });
  pictures = await servePictures();
  client = new OpenAI({ baseURL: server.baseURL, apiKey: KEY, maxRetries: 0 });
  local = await model.generate(sdkBlog, { maxNewTokens: 40 });
});

afterAll(async () => {
  await server?.close();
  await pictures?.close();
  await model?.close();
});

const post = (body: unknown, headers: Record<string, string> = { authorization: `Bearer ${KEY}` }, init: RequestInit = {}) =>
  fetch(`${server.baseURL}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...init,
  });

describe("the openai npm client", () => {
  it("gets generate()'s token ids and text for the blog's conversation, pictures as a data: URL and an http URL", async () => {
    const completion = await client.chat.completions.create({
      model: "tiny-idefics2",
      messages: openAiBlog(pictures.url(demoSecond)),
      max_tokens: 40,
    });
    const choice = completion.choices[0] as (typeof completion.choices)[0] & { token_ids: number[] };
    expect(local.text.toLowerCase()).toContain("blue");
    expect(choice.token_ids).toEqual(local.tokenIds);
    expect(choice.message.content).toBe(local.text);
    expect(choice.finish_reason).toBe("stop");
    expect(completion.model).toBe("tiny-idefics2");
    expect(completion.usage).toEqual({
      prompt_tokens: local.usage.promptTokens,
      completion_tokens: local.usage.completionTokens,
      total_tokens: local.usage.totalTokens,
    });
    expect((completion as unknown as { idefics2: { image_tokens: number } }).idefics2.image_tokens).toBe(local.usage.imageTokens);
  });

  it("streams the same answer as server-sent events, with the usage last when asked for", async () => {
    const stream = await client.chat.completions.create({
      model: "tiny-idefics2",
      messages: openAiBlog(dataUrl(demoSecond)),
      max_tokens: 40,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const text = chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join("");
    expect(text).toBe(local.text);
    expect(chunks.filter((chunk) => (chunk.choices[0]?.delta.content ?? "") !== "").length).toBeGreaterThan(1);
    expect(chunks[0]?.choices[0]?.delta.role).toBe("assistant");
    const last = chunks.at(-1);
    expect(last?.choices).toEqual([]);
    expect(last?.usage?.completion_tokens).toBe(local.usage.completionTokens);
    const final = chunks.at(-2)?.choices[0] as unknown as { finish_reason: string; token_ids: number[] };
    expect(final.finish_reason).toBe("stop");
    expect(final.token_ids).toEqual(local.tokenIds);
  });

  it("stops at a stop string and leaves it out of the content, streamed or not", async () => {
    const messages = [
      {
        role: "user" as const,
        content: [
          { type: "image_url" as const, image_url: { url: dataUrl(demoSecond) } },
          { type: "text" as const, text: "What colour is the shape?" },
        ],
      },
    ];
    const reference = await model.generate([user(image(demoSecond), "What colour is the shape?")], {
      maxNewTokens: 20,
      stopStrings: ["lu"],
    });
    expect(reference.finishReason).toBe("stop_string");
    // The content ends where the stop string begins, as OpenAI's and vLLM's do; the SDK's text goes on to the end of
    // the token that completed it.
    const cut = reference.text.indexOf("lu");
    expect(cut).toBeGreaterThan(0);
    const whole = await client.chat.completions.create({ model: "m", messages, max_tokens: 20, stop: "lu" });
    expect(whole.choices[0]?.message.content).toBe(reference.text.slice(0, cut));
    expect(whole.choices[0]?.finish_reason).toBe("stop");
    expect((whole as unknown as { idefics2: { stop_text: string; finish_reason: string } }).idefics2).toMatchObject({
      stop_text: reference.text.slice(cut),
      finish_reason: "stop_string",
    });
    const stream = await client.chat.completions.create({ model: "m", messages, max_tokens: 20, stop: ["lu", "zzzz"], stream: true });
    const pieces: string[] = [];
    for await (const chunk of stream) pieces.push(chunk.choices[0]?.delta.content ?? "");
    expect(pieces.join("")).toBe(reference.text.slice(0, cut));
    expect(pieces.some((piece) => piece.includes("l"))).toBe(false);
  });

  it("raises the server's OpenAI-shaped 400s and 401s as the client's own errors", async () => {
    const messages = [{ role: "user" as const, content: "Hello" }];
    await expect(client.chat.completions.create({ model: "m", messages, n: 2 })).rejects.toMatchObject({
      status: 400,
      param: "n",
      code: "unsupported_parameter",
    });
    await expect(
      client.chat.completions.create({ model: "m", messages, tools: [{ type: "function", function: { name: "f", parameters: {} } }] }),
    ).rejects.toMatchObject({ status: 400, param: "tools" });
    const stranger = new OpenAI({ baseURL: server.baseURL, apiKey: "wrong-key", maxRetries: 0 });
    await expect(stranger.chat.completions.create({ model: "m", messages })).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    await expect(stranger.models.list()).rejects.toMatchObject({ status: 401, code: "invalid_api_key" });
  });

  it("lists the model, with its context", async () => {
    const models = await client.models.list();
    expect(models.data).toEqual([
      expect.objectContaining({ id: "tiny-idefics2", object: "model", owned_by: "idefics2", max_model_len: 4096 }),
    ]);
  });
});

describe("the openai Python client", () => {
  it("gets generate()'s token ids, whole and streamed, with a data: URL and an http URL", async () => {
    const script = fileURLToPath(new URL("./openai_client.py", import.meta.url));
    const { stdout } = await promisify(execFile)(
      testPython(),
      [script, server.baseURL, KEY, demoFirst, dataUrl(demoSecond), pictures.url(demoSecond)],
      { timeout: 60_000, env: { ...process.env, NO_PROXY: "127.0.0.1", no_proxy: "127.0.0.1" } },
    );
    const { answers, refused, structured } = JSON.parse(stdout);
    expect(answers).toHaveLength(2);
    for (const answer of answers) {
      expect(answer).toMatchObject({
        text: local.text,
        tokenIds: local.tokenIds,
        finishReason: "stop",
        imageTokens: local.usage.imageTokens,
        streamedText: local.text,
        streamedTokenIds: local.tokenIds,
        streamedFinishReason: "stop",
      });
      expect(answer.usage.completion_tokens).toBe(local.usage.completionTokens);
      expect(answer.streamedUsage.prompt_tokens).toBe(local.usage.promptTokens);
    }
    expect(refused).toMatchObject({ status: 400, body: { param: "n", code: "unsupported_parameter", type: "invalid_request_error" } });
    // chat.completions.parse(response_format=<a pydantic model>), the picture a data: URL: pydantic validated it.
    expect(structured.finishReason).toBe("stop");
    expect(structured.parsed).toEqual(JSON.parse(structured.content));
    expect(Shape.parse(structured.parsed)).toEqual(structured.parsed);
  });
});

// A JSON Schema the embedded model answers in a few tokens (enums), and the request that asks it about a picture.
const Shape = z.object({ colour: z.enum(["red", "green", "blue", "yellow"]), size: z.enum(["small", "big"]) });
const shapeSchema = z.toJSONSchema(Shape) as Record<string, unknown>;
const describeShape = "Describe the shape as JSON.";
const shapeRequest = [
  {
    role: "user" as const,
    content: [
      { type: "image_url" as const, image_url: { url: dataUrl(demoSecond) } },
      { type: "text" as const, text: describeShape },
    ],
  },
];

describe("structured output (response_format)", () => {
  const format = { type: "json_schema" as const, json_schema: { name: "shape", schema: shapeSchema, strict: true } };
  type Extended = { token_ids: number[] };

  it("answers a json_schema with JSON that validates, with the local model's tokens, whole and streamed", async () => {
    const here = await model.generate([user(image(demoSecond), describeShape)], { schema: shapeSchema, maxNewTokens: 60 });
    const completion = await client.chat.completions.create({
      model: "m",
      messages: shapeRequest,
      max_tokens: 60,
      response_format: format,
    });
    const choice = completion.choices[0] as (typeof completion.choices)[0] & Extended;
    expect(choice.finish_reason).toBe("stop");
    expect(Shape.parse(JSON.parse(choice.message.content ?? ""))).toEqual(here.object);
    expect(choice.token_ids).toEqual(here.tokenIds);
    const stream = await client.chat.completions.create({
      model: "m",
      messages: shapeRequest,
      max_tokens: 60,
      response_format: format,
      stream: true,
    });
    const [text, finish] = await textAndFinish(stream);
    expect([text, finish]).toEqual([here.text, "stop"]);
  });

  it("gives chat.completions.parse() with zodResponseFormat a parsed, typed message", async () => {
    const completion = await client.chat.completions.parse({
      model: "m",
      messages: shapeRequest,
      max_tokens: 60,
      response_format: zodResponseFormat(Shape, "shape"),
    });
    const parsed: z.infer<typeof Shape> | null = completion.choices[0]?.message.parsed ?? null;
    expect(parsed).toEqual(Shape.parse(JSON.parse(completion.choices[0]?.message.content ?? "")));
  });

  it("answers json_object with a JSON object", async () => {
    // Sampled with a seed: greedy, the embedded model writes a key that never ends.
    const completion = await client.chat.completions.create({
      model: "m",
      messages: shapeRequest,
      max_tokens: 40,
      temperature: 1,
      seed: 1,
      response_format: { type: "json_object" },
    });
    expect(completion.choices[0]?.finish_reason).toBe("stop");
    const value: unknown = JSON.parse(completion.choices[0]?.message.content ?? "");
    expect(value).toBeTypeOf("object");
    expect(Array.isArray(value)).toBe(false);
  });

  it("cuts an answer off at max_tokens with finish_reason length, the idefics2 extension saying incomplete_structure", async () => {
    const whole = await client.chat.completions.create({ model: "m", messages: shapeRequest, max_tokens: 4, response_format: format });
    expect(whole.choices[0]?.finish_reason).toBe("length");
    expect(whole.choices[0]?.message.content).toMatch(/^\{/);
    expect((whole as unknown as { idefics2: { finish_reason: string } }).idefics2.finish_reason).toBe("incomplete_structure");
    expect(whole.usage?.completion_tokens).toBe(4);
    const stream = await client.chat.completions.create({
      model: "m",
      messages: shapeRequest,
      max_tokens: 4,
      response_format: format,
      stream: true,
    });
    const [text, finish] = await textAndFinish(stream);
    expect([text, finish]).toEqual([whole.choices[0]?.message.content, "length"]);
  });

  it("refuses a schema the engine cannot compile with a 400 on response_format naming the construct, streamed or not", async () => {
    const bad = { type: "json_schema" as const, json_schema: { name: "bad", schema: { type: "object", not: { required: ["a"] } } } };
    for (const stream of [false, true]) {
      const refused = await client.chat.completions
        .create({ model: "m", messages: shapeRequest, response_format: bad, stream })
        .catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(OpenAI.BadRequestError);
      expect(refused).toMatchObject({ status: 400, type: "invalid_request_error", param: "response_format", code: "INVALID_OPTIONS" });
      expect((refused as Error).message).toMatch(/'bad'.*Unimplemented keys: \["not"\]/);
    }
  });
});

describe("what the server refuses", () => {
  const hello = [{ role: "user", content: "Hello" }];

  it.each([
    [{ messages: hello, response_format: { type: "grammar", grammar: "x" } }, "response_format.type", "invalid_value"],
    [{ messages: hello, logprobs: true }, "logprobs", "unsupported_parameter"],
    [{ messages: hello, frequency_penalty: 0.5 }, "frequency_penalty", "unsupported_parameter"],
    [{ messages: hello, best_of: 2 }, "best_of", "unknown_parameter"],
    [{ messages: hello, temperature: 3 }, "temperature", "invalid_value"],
    [{ messages: hello, max_tokens: 0 }, "max_tokens", "invalid_value"],
    [{ messages: [] }, "messages", "invalid_value"],
    [{ messages: [{ role: "tool", content: "x", tool_call_id: "1" }] }, "messages[0].role", "unsupported_parameter"],
    [
      { messages: [{ role: "user", content: [{ type: "input_audio", input_audio: {} }] }] },
      "messages[0].content[0].type",
      "unsupported_parameter",
    ],
    [
      { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "file:///etc/passwd" } }] }] },
      "messages[0].content[0].image_url.url",
      "invalid_value",
    ],
    [
      { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "/etc/passwd" } }] }] },
      "messages[0].content[0].image_url.url",
      "invalid_value",
    ],
  ])("refuses %j with a 400 naming `%s`", async (body, param, code) => {
    const response = await post(body);
    expect(response.status).toBe(400);
    const error = await errorOf(response);
    expect(error).toMatchObject({ type: "invalid_request_error", param, code });
    expect(error.message).toEqual(expect.any(String));
  });

  it("refuses a picture it cannot read, and a body that is not JSON, with 400", async () => {
    const corrupt = await post({
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } },
            { type: "text", text: "?" },
          ],
        },
      ],
    });
    expect(corrupt.status).toBe(400);
    expect(await errorOf(corrupt)).toMatchObject({ code: "IMAGE_UNREADABLE", param: "messages" });
    const notJson = await post("{ nope");
    expect(notJson.status).toBe(400);
    expect((await errorOf(notJson)).code).toBe("invalid_json");
  });

  it("refuses a body over its limit with 413, and requests without the key with 401", async () => {
    const large = await post({ messages: [{ role: "user", content: "x".repeat(2 * 1024 * 1024) }] });
    expect(large.status).toBe(413);
    expect((await errorOf(large)).code).toBe("request_too_large");
    const missing = await post({ messages: hello }, {});
    expect(missing.status).toBe(401);
    expect(missing.headers.get("www-authenticate")).toMatch(/^Bearer/);
    expect((await fetch(`${server.url}/metrics`)).status).toBe(401);
    const health = await fetch(`${server.url}/health`);
    expect([health.status, await health.json()]).toEqual([200, { status: "ok" }]);
  });
});

describe("a client that disconnects", () => {
  // A request that would generate for a minute if nothing stopped it.
  const long = { messages: [{ role: "user", content: "Tell me a very long story." }], max_tokens: 4000, min_tokens: 4000 };
  const short = { messages: [{ role: "user", content: "Hi" }], max_tokens: 4 };

  async function timed(): Promise<number> {
    const started = performance.now();
    const response = await post(short);
    expect(response.status).toBe(200);
    await response.json();
    return performance.now() - started;
  }

  it.each([true, false])("stops its generation (stream: %s): the next request starts at once", async (stream) => {
    const idle = await timed();
    const before = metricValue(await server.metrics(), `idefics2_requests_total{status="499",stream="${stream}"}`) ?? 0;
    const controller = new AbortController();
    const response = post({ ...long, stream }, undefined, { signal: controller.signal });
    if (stream) {
      const reader = ((await response).body as ReadableStream<Uint8Array>).getReader();
      // Three pieces of text have arrived: the generation is under way.
      let text = "";
      while (text.split('"content":"').length < 5) {
        const { done, value } = await reader.read();
        if (done) throw new Error(`the stream ended early: ${text}`);
        text += new TextDecoder().decode(value);
      }
    } else {
      await waitUntil(async () => metricValue(await server.metrics(), "idefics2_requests_running") === 1);
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    controller.abort();
    await response.catch(() => undefined);
    const next = await timed();
    console.log(`after a disconnect (stream ${stream}): the next request took ${Math.round(next)} ms, ${Math.round(idle)} ms when idle`);
    expect(next).toBeLessThan(idle + 1500);
    await waitUntil(
      async () => metricValue(await server.metrics(), `idefics2_requests_total{status="499",stream="${stream}"}`) === before + 1,
    );
  });
});

describe("metrics", () => {
  it("has the queue, the requests, the tokens and the latency histograms in Prometheus' text format", async () => {
    const response = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${KEY}` } });
    expect(response.headers.get("content-type")).toMatch(/^text\/plain/);
    const text = await response.text();
    for (const name of [
      "# TYPE idefics2_queue_depth gauge",
      "# TYPE idefics2_requests_running gauge",
      "# TYPE idefics2_requests_total counter",
      "# TYPE idefics2_prompt_tokens_total counter",
      "# TYPE idefics2_generation_tokens_total counter",
      "# TYPE idefics2_time_to_first_token_seconds histogram",
      "# TYPE idefics2_time_per_output_token_seconds histogram",
      "# TYPE idefics2_request_duration_seconds histogram",
      'idefics2_time_to_first_token_seconds_bucket{le="+Inf"}',
      'idefics2_time_per_output_token_seconds_bucket{le="0.1"}',
      'idefics2_requests_total{status="200",stream="true"}',
      'idefics2_requests_total{status="400",stream="false"}',
      'idefics2_requests_total{status="499",stream="true"}',
    ]) {
      expect(text).toContain(name);
    }
    expect(metricValue(text, "idefics2_queue_depth")).toBe(0);
    expect(metricValue(text, "idefics2_generation_tokens_total")).toBeGreaterThan(40);
    expect(metricValue(text, "idefics2_time_per_output_token_seconds_count")).toBeGreaterThan(10);
  });
});

/** A streamed completion's whole text and its finish reason. */
async function textAndFinish(stream: AsyncIterable<OpenAI.Chat.Completions.ChatCompletionChunk>): Promise<[string, string | null]> {
  let text = "";
  let finish: string | null = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta.content ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  return [text, finish];
}

import { randomBytes } from "node:crypto";
import { describe, expect, expectTypeOf, it } from "vitest";
import {
  AbortError,
  ClosedError,
  GenerationError,
  ImageError,
  InvalidInputError,
  ModelLoadError,
  ProtocolError,
  QueueFullError,
  TimeoutError,
} from "../../src/errors.js";
import type { GenerateParams, GenerateResult } from "../../src/protocol/messages.js";
import { connect } from "./fake-worker.js";
import { textGenerateParams } from "../helpers/wire-params.js";

function generateParams(text: string): GenerateParams {
  return textGenerateParams(text, 8);
}

function generateResult(text: string): GenerateResult {
  return {
    text,
    tokenIds: [1, 2],
    finishReason: "stop",
    usage: { promptTokens: 3, imageTokens: 0, completionTokens: 2, totalTokens: 5 },
    timings: { preprocessMs: 1, prefillMs: 2, decodeMs: 3, totalMs: 6, decodeTokensPerSecond: 333 },
  };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("WorkerConnection over an in-memory stream pair", { timeout: 5_000 }, () => {
  it("resolves ready with the pid and versions from the worker's ready frame", async () => {
    const { connection, worker } = connect();
    worker.ready();
    await expect(connection.ready).resolves.toEqual({ pid: 4242, versions: { python: "3.12.1", torch: "2.5.0", transformers: "5.0.0" } });
  });

  it("sends a request frame and resolves with the result the worker sends for its id", async () => {
    const { connection, worker } = connect();
    const answer = connection.request("ping", {});
    expectTypeOf(answer).resolves.toEqualTypeOf<{ pong: true }>();
    const { header } = await worker.next();
    expect(header).toEqual({ type: "request", id: 1, method: "ping", params: {} });
    worker.result(1, { pong: true });
    await expect(answer).resolves.toEqual({ pong: true });
    expect(connection.pendingCount).toBe(0);
  });

  it("sends a payload of several pictures as one frame's payload, whole, before the next call's frame", async () => {
    const { connection, worker } = connect();
    const pictures = [randomBytes(300_000), randomBytes(5), randomBytes(200_000)];
    const withPictures = connection.request("generate", generateParams("a"), { payload: pictures });
    const after = connection.request("ping", {});
    const first = await worker.next();
    expect(first.header).toMatchObject({ type: "request", id: 1, method: "generate" });
    expect(first.payload.equals(Buffer.concat(pictures))).toBe(true);
    const second = await worker.next();
    expect(second.header).toEqual({ type: "request", id: 2, method: "ping", params: {} });
    expect(second.payload.length).toBe(0);
    worker.result(1, generateResult("a"));
    worker.result(2, { pong: true });
    await expect(withPictures).resolves.toMatchObject({ text: "a" });
    await expect(after).resolves.toEqual({ pong: true });
  });

  it("hands each event only to the onEvent of the call whose id it carries", async () => {
    const { connection, worker } = connect();
    const first: string[] = [];
    const second: string[] = [];
    const a = connection.request("generate", generateParams("a"), {
      onEvent: (event) => event.event === "token" && first.push(event.data.text),
    });
    const b = connection.request("generate", generateParams("b"), {
      onEvent: (event) => event.event === "token" && second.push(event.data.text),
    });
    const ids = [(await worker.next()).header, (await worker.next()).header].map((header) => (header as { id: number }).id);
    expect(ids).toEqual([1, 2]);
    worker.token(1, "x");
    worker.token(2, "p");
    worker.token(1, "y");
    worker.token(2, "q");
    worker.send({ type: "event", id: 1, event: "progress", data: { stage: "s", message: "m" } });
    worker.result(2, generateResult("pq"));
    worker.result(1, generateResult("xy"));
    await Promise.all([a, b]);
    expect(first).toEqual(["x", "y"]);
    expect(second).toEqual(["p", "q"]);
  });

  it("settles two concurrent calls answered out of order, each with its own result", async () => {
    const { connection, worker } = connect();
    const settled: string[] = [];
    const track = (name: string) => (result: GenerateResult) => {
      settled.push(name);
      return result;
    };
    const a = connection.request("generate", generateParams("a")).then(track("a"));
    const b = connection.request("generate", generateParams("b")).then(track("b"));
    worker.result(2, generateResult("answer to b"));
    await expect(b).resolves.toMatchObject({ text: "answer to b" });
    expect(settled).toEqual(["b"]);
    expect(connection.pendingCount).toBe(1);
    worker.result(1, generateResult("answer to a"));
    await expect(a).resolves.toMatchObject({ text: "answer to a" });
    expect(settled).toEqual(["b", "a"]);
  });

  it.each([
    ["MODEL_NOT_FOUND", "ModelLoadError", ModelLoadError],
    ["INVALID_OPTIONS", "InvalidInputError", InvalidInputError],
    ["IMAGE_UNREADABLE", "ImageError", ImageError],
    ["CONTEXT_OVERFLOW", "GenerationError", GenerationError],
    ["QUEUE_FULL", "QueueFullError", QueueFullError],
    ["ABORTED", "AbortError", AbortError],
  ] as const)("rejects a call whose error frame has code %s with a %s", async (code, _name, ErrorClass) => {
    const { connection, worker } = connect();
    const answer = connection.request("ping", {});
    worker.error(1, { code, message: "it failed" });
    const error = await answer.catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ErrorClass);
    expect(error).toMatchObject({ code });
    expect(connection.open).toBe(true);
  });

  it("rejects a call whose error frame has a code this SDK does not know with GenerationError", async () => {
    const { connection, worker } = connect();
    const answer = connection.request("ping", {});
    worker.error(1, { code: "SOMETHING_NEWER", message: "it failed" });
    await expect(answer).rejects.toMatchObject({ name: "GenerationError", code: "GENERATION_FAILED", message: "it failed" });
  });

  it("keeps an error frame's message, fix, Python type and traceback on the error", async () => {
    const { connection, worker } = connect();
    const answer = connection.request("ping", {});
    worker.error(1, {
      code: "MODEL_NOT_FOUND",
      message: "no such model",
      fix: "check the path",
      pythonType: "OSError",
      traceback: "Traceback (most recent call last)",
    });
    await expect(answer).rejects.toMatchObject({
      message: "no such model",
      fix: "check the path",
      pythonType: "OSError",
      pythonTraceback: "Traceback (most recent call last)",
    });
  });

  it("sends a cancel frame for the call's id when its signal aborts, and rejects with AbortError carrying the reason", async () => {
    const { connection, worker } = connect();
    const controller = new AbortController();
    const other = connection.request("ping", {});
    const answer = connection.request("ping", {}, { signal: controller.signal });
    await worker.next();
    await worker.next();
    const reason = new Error("user pressed stop");
    controller.abort(reason);
    await expect(answer).rejects.toBeInstanceOf(AbortError);
    await expect(answer).rejects.toMatchObject({ code: "ABORTED", cause: reason });
    expect((await worker.next()).header).toEqual({ type: "cancel", id: 2 });
    worker.result(1, { pong: true });
    await expect(other).resolves.toEqual({ pong: true });
  });

  it("rejects at once and sends nothing when the signal is already aborted", async () => {
    const { connection, worker } = connect();
    const reason = new Error("too late");
    await expect(connection.request("ping", {}, { signal: AbortSignal.abort(reason) })).rejects.toMatchObject({
      code: "ABORTED",
      cause: reason,
    });
    expect(await worker.unread()).toEqual([]);
  });

  it("rejects with TimeoutError after timeoutMs and sends a cancel frame for that id", async () => {
    const { connection, worker } = connect();
    const started = Date.now();
    const answer = connection.request("ping", {}, { timeoutMs: 50 });
    await worker.next();
    await expect(answer).rejects.toBeInstanceOf(TimeoutError);
    await expect(answer).rejects.toMatchObject({ code: "TIMED_OUT", message: "The ping call timed out after 50 ms" });
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
    expect((await worker.next()).header).toEqual({ type: "cancel", id: 1 });
  });

  it("drops the events and result that arrive for a call already cancelled, and keeps serving", async () => {
    const { connection, worker } = connect();
    const controller = new AbortController();
    const tokens: string[] = [];
    const answer = connection.request("generate", generateParams("a"), {
      signal: controller.signal,
      onEvent: (event) => event.event === "token" && tokens.push(event.data.text),
    });
    controller.abort();
    await expect(answer).rejects.toBeInstanceOf(AbortError);
    worker.token(1, "late");
    worker.result(1, generateResult("late"));
    const next = connection.request("ping", {});
    worker.result(2, { pong: true });
    await expect(next).resolves.toEqual({ pong: true });
    expect(tokens).toEqual([]);
    expect(connection.open).toBe(true);
  });

  it("rejects every pending call, ready and every later call with the error it is failed with", async () => {
    const { connection } = connect();
    const calls = [connection.request("ping", {}), connection.request("info", {}), connection.request("generate", generateParams("a"))];
    const crash = new GenerationError("GENERATION_FAILED", "the worker went away");
    connection.fail(crash);
    for (const outcome of await Promise.allSettled(calls)) expect(outcome).toEqual({ status: "rejected", reason: crash });
    await expect(connection.ready).rejects.toBe(crash);
    await expect(connection.request("ping", {})).rejects.toBe(crash);
    expect(connection.failure).toBe(crash);
    expect(connection.open).toBe(false);
    expect(connection.pendingCount).toBe(0);
  });

  it("fails with ProtocolError, rejecting pending calls and telling onFailure, when the worker writes bytes that are not frames", async () => {
    const failures: unknown[] = [];
    const { connection, worker } = connect({ onFailure: (error) => failures.push(error) });
    const answer = connection.request("ping", {});
    worker.sendBytes(Buffer.from("Loading checkpoint shards: 100%|██████████|\n"));
    await expect(answer).rejects.toBeInstanceOf(ProtocolError);
    expect(failures).toHaveLength(1);
    expect(failures[0]).toBe(connection.failure);
    await expect(connection.request("ping", {})).rejects.toBeInstanceOf(ProtocolError);
  });

  it("fails with ProtocolError when a frame's header is not a protocol message", async () => {
    const { connection, worker } = connect();
    worker.send({ type: "hello", id: 1 });
    await expect(connection.ready).rejects.toThrow(/not the protocol: \{"type":"hello","id":1\}/);
    expect(connection.failure).toBeInstanceOf(ProtocolError);
  });

  it("rejects ready with ProtocolError when the worker speaks another protocol version", async () => {
    const failures: unknown[] = [];
    const { connection, worker } = connect({ onFailure: (error) => failures.push(error) });
    worker.ready(99);
    await expect(connection.ready).rejects.toThrow(/protocol 99/);
    expect(failures).toEqual([expect.any(ProtocolError)]);
  });

  it("fails the whole connection when the worker reports an error that no call owns", async () => {
    const { connection, worker } = connect();
    const answer = connection.request("ping", {});
    worker.error(null, { code: "PROTOCOL_ERROR", message: "the header is not JSON" });
    await expect(answer).rejects.toMatchObject({ name: "ProtocolError", message: "the header is not JSON" });
    expect(connection.open).toBe(false);
  });

  it("rejects only the call whose result does not match its method's schema", async () => {
    const { connection, worker } = connect();
    const answer = connection.request("ping", {});
    worker.result(1, { pong: "yes" });
    await expect(answer).rejects.toThrow(/ping result does not match its schema/);
    expect(connection.open).toBe(true);
  });

  it("delivers a request's payload bytes to the worker intact", async () => {
    const { connection, worker } = connect();
    const payload = randomBytes(3 * 1024 * 1024 + 17);
    void connection.request("generate", generateParams("look"), { payload });
    const frame = await worker.next();
    expect((frame.header as { params: GenerateParams }).params).toEqual(generateParams("look"));
    expect(frame.payload.equals(payload)).toBe(true);
  });

  it("close rejects pending calls with ClosedError, sends shutdown, ends the output and refuses later calls", async () => {
    const { connection, worker } = connect();
    const answer = connection.request("ping", {});
    await worker.next();
    connection.close();
    await expect(answer).rejects.toBeInstanceOf(ClosedError);
    expect((await worker.next()).header).toEqual({ type: "shutdown" });
    await tick();
    expect(worker.ended).toBe(true);
    await expect(connection.request("ping", {})).rejects.toBeInstanceOf(ClosedError);
    connection.close();
    expect(await worker.unread()).toEqual([]);
  });

  it("reports the number of pending calls to onPendingChange as calls start and settle", async () => {
    const counts: number[] = [];
    const { connection, worker } = connect({ onPendingChange: (pending) => counts.push(pending) });
    const a = connection.request("ping", {});
    const b = connection.request("ping", {});
    worker.result(1, { pong: true });
    worker.result(2, { pong: true });
    await Promise.all([a, b]);
    expect(counts).toEqual([1, 2, 1, 0]);
  });
});

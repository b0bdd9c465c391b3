import { getEventListeners } from "node:events";
import { describe, expect, it } from "vitest";
import { ClosedError, InvalidInputError, ProtocolError } from "../../src/errors.js";
import { MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES } from "../../src/protocol/frame-codec.js";
import { textGenerateParams } from "../helpers/wire-params.js";
import { connect } from "./fake-worker.js";

// A call that cannot be sent leaves nothing behind: no entry in the pending table (which would hold the worker, and
// so the program, alive), no timer, no abort listener, no bytes on the wire; and the connection still closes.

describe("a call that cannot be sent", { timeout: 5_000 }, () => {
  it("rejects a request whose header would pass 16 MiB before registering it: no pending entry, listener or frame", async () => {
    const counts: number[] = [];
    const { connection, worker } = connect({ onPendingChange: (pending) => counts.push(pending) });
    const controller = new AbortController();
    const huge = textGenerateParams("x".repeat(MAX_HEADER_BYTES), 5);
    const error = await connection
      .request("generate", huge, { signal: controller.signal, timeoutMs: 60_000 })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ProtocolError);
    expect((error as ProtocolError).message).toMatch(/exceeds 16777216/);
    expect(connection.pendingCount).toBe(0);
    expect(counts).toEqual([]);
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
    expect(await worker.unread()).toEqual([]);
  });

  it("rejects a request whose payload would pass 1 GiB the same way", async () => {
    const counts: number[] = [];
    const { connection, worker } = connect({ onPendingChange: (pending) => counts.push(pending) });
    const payload = new Uint8Array(MAX_PAYLOAD_BYTES + 1);
    await expect(connection.request("generate", textGenerateParams("hi", 5), { payload, timeoutMs: 60_000 })).rejects.toBeInstanceOf(
      ProtocolError,
    );
    expect(connection.pendingCount).toBe(0);
    expect(counts).toEqual([]);
    expect(await worker.unread()).toEqual([]);
  });

  it.each([
    ["a plain object", { aborted: false }],
    ["an object with listener methods but no AbortSignal", { aborted: false, addEventListener: 1, removeEventListener: 1 }],
    ["a string", "stop"],
    ["null", null],
  ])("refuses a signal that is %s with InvalidInputError naming the option, and close() still works", async (_what, signal) => {
    const { connection, worker } = connect();
    const error = await connection.request("ping", {}, { signal: signal as never }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error).toMatchObject({ code: "INVALID_OPTIONS", message: expect.stringMatching(/`signal`.*AbortSignal/) });
    expect(connection.pendingCount).toBe(0);
    expect(await worker.unread()).toEqual([]);
    connection.close();
    expect((await worker.next()).header).toEqual({ type: "shutdown" });
    await expect(connection.request("ping", {})).rejects.toBeInstanceOf(ClosedError);
  });

  it.each([
    ["NaN", Number.NaN],
    ["negative", -5],
    ["Infinity", Number.POSITIVE_INFINITY],
    ["a string", "100"],
  ])("refuses a timeoutMs that is %s with InvalidInputError", async (_what, timeoutMs) => {
    const { connection, worker } = connect();
    await expect(connection.request("ping", {}, { timeoutMs: timeoutMs as never })).rejects.toMatchObject({
      code: "INVALID_OPTIONS",
      message: expect.stringMatching(/`timeoutMs`/),
    });
    expect(connection.pendingCount).toBe(0);
    expect(await worker.unread()).toEqual([]);
  });

  it("does not fire a timeoutMs longer than Node's timers hold at once (2^31 ms and more)", async () => {
    const { connection, worker } = connect();
    const answer = connection.request("ping", {}, { timeoutMs: 2 ** 31 });
    const frame = await worker.next();
    await new Promise((resolve) => setTimeout(resolve, 50));
    worker.result((frame.header as { id: number }).id, { pong: true });
    await expect(answer).resolves.toEqual({ pong: true });
  });

  it("keeps the connection working when a caller's onEvent throws: the call still settles with its result", async () => {
    const { connection, worker } = connect();
    const answer = connection.request("generate", textGenerateParams("hi", 5), {
      onEvent: () => {
        throw new Error("a listener bug");
      },
    });
    await worker.next();
    worker.token(1, "a");
    worker.result(1, {
      text: "a",
      tokenIds: [1],
      finishReason: "stop",
      usage: { promptTokens: 1, imageTokens: 0, completionTokens: 1, totalTokens: 2 },
      timings: { preprocessMs: 0, prefillMs: 0, decodeMs: 0, totalMs: 0, decodeTokensPerSecond: 0 },
    });
    await expect(answer).resolves.toMatchObject({ text: "a" });
  });
});

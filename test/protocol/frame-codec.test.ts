import { describe, expect, it } from "vitest";
import { encodeFrame, encodeFrameParts, FrameDecoder, MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES } from "../../src/protocol/frame-codec.js";
import { ProtocolError } from "../../src/errors.js";

describe("frame codec", () => {
  it("round-trips a header and raw payload bytes", () => {
    const payload = Buffer.from([0, 1, 2, 255, 254]);
    const frames = new FrameDecoder().push(encodeFrame({ type: "request", id: 7, text: "héllo ✓" }, payload));
    expect(frames).toHaveLength(1);
    expect(frames[0]?.header).toEqual({ type: "request", id: 7, text: "héllo ✓" });
    expect([...(frames[0]?.payload ?? [])]).toEqual([0, 1, 2, 255, 254]);
  });

  it("reassembles frames split at every possible byte boundary", () => {
    const bytes = Buffer.concat([
      encodeFrame({ a: 1 }, Buffer.from("xyz")),
      encodeFrame({ b: 2 }),
      encodeFrame({ c: 3 }, Buffer.alloc(1000, 9)),
    ]);
    for (let cut = 0; cut <= bytes.length; cut++) {
      const decoder = new FrameDecoder();
      const frames = [...decoder.push(bytes.subarray(0, cut)), ...decoder.push(bytes.subarray(cut))];
      expect(frames.map((frame) => frame.header)).toEqual([{ a: 1 }, { b: 2 }, { c: 3 }]);
      expect(frames[2]?.payload.length).toBe(1000);
      expect(decoder.pendingBytes).toBe(0);
    }
  });

  it("reassembles a stream delivered one byte at a time, with several frames per chunk elsewhere", () => {
    const bytes = Buffer.concat(Array.from({ length: 50 }, (_, i) => encodeFrame({ i }, Buffer.alloc(i, i))));
    const decoder = new FrameDecoder();
    const headers: unknown[] = [];
    for (const byte of bytes) headers.push(...decoder.push(Buffer.from([byte])).map((frame) => frame.header));
    expect(headers).toEqual(Array.from({ length: 50 }, (_, i) => ({ i })));
  });

  it("rejects a stream that is not frames with a ProtocolError", () => {
    const decoder = new FrameDecoder();
    expect(() => decoder.push(Buffer.from("Loading checkpoint shards: 100%|██████████|\n"))).toThrow(ProtocolError);
  });

  it("rejects a header that is not JSON", () => {
    const bad = Buffer.concat([Buffer.from([0, 0, 0, 3, 0, 0, 0, 0]), Buffer.from("{{{")]);
    expect(() => new FrameDecoder().push(bad)).toThrow(/not JSON/);
  });

  it("refuses to encode a header over the limit", () => {
    expect(() => encodeFrame({ big: "x".repeat(MAX_HEADER_BYTES) })).toThrow(ProtocolError);
  });

  it("encodes a payload of several buffers as one payload, writing those buffers as they are", () => {
    const pictures = [Buffer.alloc(12, 1), Buffer.alloc(0), new Uint8Array([7, 8, 9])];
    const parts = encodeFrameParts({ type: "request", id: 2, text: "héllo" }, pictures);
    expect(parts.slice(1)).toEqual([pictures[0], pictures[2]]);
    expect(parts[1]).toBe(pictures[0]);
    expect(parts[2]).toBe(pictures[2]);
    const whole = Buffer.concat(parts);
    expect(whole.equals(encodeFrame({ type: "request", id: 2, text: "héllo" }, Buffer.concat(pictures)))).toBe(true);
    const [frame] = new FrameDecoder().push(whole);
    expect(frame?.header).toEqual({ type: "request", id: 2, text: "héllo" });
    expect([...(frame?.payload ?? [])]).toEqual([...Buffer.alloc(12, 1), 7, 8, 9]);
  });

  it("refuses a payload whose buffers together are over the limit, before writing anything", () => {
    const half = { length: MAX_PAYLOAD_BYTES / 2 + 1 } as Uint8Array;
    expect(() => encodeFrameParts({ type: "request" }, [half, half])).toThrow(/payload of \d+ bytes exceeds/);
  });
});

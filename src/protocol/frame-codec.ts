import { ProtocolError } from "../errors.js";

/** One protocol frame: a JSON header and raw bytes beside it (images, never base64). */
export interface Frame {
  header: unknown;
  payload: Buffer;
}

const PREFIX_BYTES = 8;
export const MAX_HEADER_BYTES = 16 * 1024 * 1024;
export const MAX_PAYLOAD_BYTES = 1024 * 1024 * 1024;

/** A frame's payload: one buffer, or several sent one after another as one payload (a request's pictures). */
export type FramePayload = Uint8Array | readonly Uint8Array[];

// Layout: [u32 BE header length][u32 BE payload length][UTF-8 JSON header][payload], as in docs/PROTOCOL.md.
export function encodeFrame(header: object, payload: FramePayload = EMPTY): Buffer {
  return Buffer.concat(encodeFrameParts(header, payload));
}

/**
 * A frame as the buffers to write one after another: the prefix and header in one, then the payload's own buffers,
 * never copied (a request's pictures are megabytes; the stream writes them together with one writev).
 */
export function encodeFrameParts(header: object, payload: FramePayload = EMPTY): Uint8Array[] {
  const parts = payload instanceof Uint8Array ? [payload] : payload;
  const payloadLength = parts.reduce((sum, part) => sum + part.length, 0);
  const json = JSON.stringify(header);
  const jsonLength = Buffer.byteLength(json, "utf8");
  if (jsonLength > MAX_HEADER_BYTES) {
    throw new ProtocolError("PROTOCOL_ERROR", `Frame header of ${jsonLength} bytes exceeds ${MAX_HEADER_BYTES}`);
  }
  if (payloadLength > MAX_PAYLOAD_BYTES) {
    throw new ProtocolError("PROTOCOL_ERROR", `Frame payload of ${payloadLength} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
  }
  const head = Buffer.allocUnsafe(PREFIX_BYTES + jsonLength);
  head.writeUInt32BE(jsonLength, 0);
  head.writeUInt32BE(payloadLength, 4);
  head.write(json, PREFIX_BYTES, "utf8");
  return [head, ...parts.filter((part) => part.length > 0)];
}

const EMPTY = new Uint8Array(0);

/** Turns a byte stream into frames; chunks may split frames anywhere. */
export class FrameDecoder {
  #chunks: Buffer[] = [];
  #buffered = 0;

  /** Adds bytes and returns every frame now complete; throws ProtocolError on a malformed frame. */
  push(chunk: Buffer): Frame[] {
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    const frames: Frame[] = [];
    for (;;) {
      const frame = this.#next();
      if (!frame) return frames;
      frames.push(frame);
    }
  }

  /** Bytes received that do not yet form a whole frame. */
  get pendingBytes(): number {
    return this.#buffered;
  }

  #next(): Frame | undefined {
    if (this.#buffered < PREFIX_BYTES) return undefined;
    const head = this.#peek(PREFIX_BYTES);
    const headerLength = head.readUInt32BE(0);
    const payloadLength = head.readUInt32BE(4);
    if (headerLength > MAX_HEADER_BYTES || payloadLength > MAX_PAYLOAD_BYTES) {
      throw new ProtocolError("PROTOCOL_ERROR", `Frame lengths out of range (header ${headerLength}, payload ${payloadLength})`, {
        fix: "Something other than the worker wrote to its stdout; run `idefics2 doctor`.",
      });
    }
    const total = PREFIX_BYTES + headerLength + payloadLength;
    if (this.#buffered < total) return undefined;
    const bytes = this.#take(total);
    const headerText = bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength).toString("utf8");
    let header: unknown;
    try {
      header = JSON.parse(headerText);
    } catch (cause) {
      throw new ProtocolError("PROTOCOL_ERROR", `Frame header is not JSON: ${headerText.slice(0, 80)}`, { cause });
    }
    return { header, payload: bytes.subarray(PREFIX_BYTES + headerLength) };
  }

  #peek(length: number): Buffer {
    const first = this.#chunks[0];
    if (first && first.length >= length) return first;
    const joined = Buffer.concat(this.#chunks);
    this.#chunks = [joined];
    return joined;
  }

  #take(length: number): Buffer {
    const joined = this.#peek(length);
    const rest = joined.subarray(length);
    // #peek guarantees the first chunk holds the whole frame; later chunks stay queued behind its rest.
    this.#chunks.splice(0, 1, ...(rest.length > 0 ? [rest] : []));
    this.#buffered -= length;
    // Copy so a frame's payload does not pin the whole joined buffer in memory.
    return Buffer.from(joined.subarray(0, length));
  }
}

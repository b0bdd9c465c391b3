import type { Readable, Writable } from "node:stream";
import { ClosedError, Idefics2Error, ProtocolError } from "../errors.js";
import { encodeFrameParts, FrameDecoder, type FramePayload } from "../protocol/frame-codec.js";
import { type InboundFrame, methods, type MethodName, type ParamsOf, type ResultOf, type WorkerVersions } from "../protocol/messages.js";
import { deferred } from "./deferred.js";
import { type CallOptions, PendingCalls } from "./pending-calls.js";
import { readInboundFrame } from "./read-inbound-frame.js";
import { workerError } from "./worker-error.js";

export interface RequestOptions extends CallOptions {
  /** The request's raw bytes: one buffer, or several (a request's pictures, in order) sent as one payload. */
  payload?: FramePayload;
}

/** What the worker says in its `ready` frame. */
export interface WorkerHello {
  pid: number;
  versions: Partial<WorkerVersions>;
}

export interface WorkerConnectionOptions {
  /** The peer broke the protocol and the connection failed: the transport under it should be torn down. */
  onFailure?: (error: Idefics2Error) => void;
  /** The number of pending calls changed, so an owner can hold its transport open only while calls are pending. */
  onPendingChange?: (pending: number) => void;
}

/** The worker protocol over any pair of byte streams: frames in from `input`, frames out to `output`. */
export class WorkerConnection {
  readonly #output: Writable;
  readonly #onFailure: ((error: Idefics2Error) => void) | undefined;
  readonly #calls: PendingCalls;
  #decoder = new FrameDecoder();
  #failure: Idefics2Error | undefined;
  #closed = false;
  #ready = deferred<WorkerHello>();

  constructor(input: Readable, output: Writable, options: WorkerConnectionOptions = {}) {
    this.#output = output;
    this.#onFailure = options.onFailure;
    const cancel = (id: number) => {
      if (this.open) this.#write(encodeFrameParts({ type: "cancel", id }));
    };
    this.#calls = new PendingCalls(cancel, options.onPendingChange);
    input.on("data", (chunk: Buffer) => this.#onData(chunk));
  }

  /** Resolves with the worker's `ready` frame; rejects if the connection fails first. */
  get ready(): Promise<WorkerHello> {
    return this.#ready.promise;
  }

  /** True until the connection fails or is closed. */
  get open(): boolean {
    return this.#failure === undefined && !this.#closed;
  }

  /** The error every call gets once the connection has failed, if it has. */
  get failure(): Idefics2Error | undefined {
    return this.#failure;
  }

  get pendingCount(): number {
    return this.#calls.size;
  }

  /** Sends one request; resolves with its zod-checked result, rejects with a typed error. */
  request<M extends MethodName>(method: M, params: ParamsOf<M>, options: RequestOptions = {}): Promise<ResultOf<M>> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#closed) return Promise.reject(new ClosedError("The worker"));
    return this.#calls.add<ResultOf<M>>(
      method,
      options,
      (id) => encodeFrameParts({ type: "request", id, method, params }, options.payload),
      (frame) => this.#write(frame),
    );
  }

  /** Fails the connection: `ready`, every pending call and every later call reject with the first such error. */
  fail(error: Idefics2Error): void {
    this.#failure ??= error;
    this.#ready.reject(this.#failure);
    this.#calls.rejectAll(this.#failure);
  }

  /** Rejects pending and later calls with ClosedError, asks the worker to shut down, and ends `output`. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#calls.rejectAll(new ClosedError("The worker"));
    if (this.#failure) return;
    this.#write(encodeFrameParts({ type: "shutdown" }));
    this.#output.end();
  }

  // A frame's buffers go out together (corked: one writev), and no other frame can come between them.
  #write(frame: readonly Uint8Array[]): void {
    const output = this.#output;
    if (output.destroyed || !output.writable) return;
    if (frame.length === 1) {
      output.write(frame[0]);
      return;
    }
    output.cork();
    for (const part of frame) output.write(part);
    output.uncork();
  }

  #onData(chunk: Buffer): void {
    let frames: ReturnType<FrameDecoder["push"]>;
    try {
      frames = this.#decoder.push(chunk);
    } catch (error) {
      this.#breach(error instanceof Idefics2Error ? error : new ProtocolError("PROTOCOL_ERROR", String(error)));
      return;
    }
    for (const { header } of frames) {
      const frame = readInboundFrame(header);
      if (frame instanceof ProtocolError) this.#breach(frame);
      else this.#onFrame(frame);
    }
  }

  // Frames for calls already aborted or timed out on this side are expected, and dropped.
  #onFrame(frame: InboundFrame): void {
    if (frame.type === "ready") {
      this.#ready.resolve({ pid: frame.pid, versions: frame.versions });
    } else if (frame.type === "event") {
      const onEvent = this.#calls.get(frame.id)?.onEvent;
      try {
        onEvent?.(frame);
      } catch {
        // A listener's own failure (a caller's progress callback) must not break the connection or the program.
      }
    } else if (frame.type === "result") {
      const call = this.#calls.take(frame.id);
      if (!call) return;
      const result = methods[call.method].result.safeParse(frame.result);
      if (result.success) call.resolve(result.data);
      else
        call.reject(
          new ProtocolError("PROTOCOL_ERROR", `The worker's ${call.method} result does not match its schema: ${result.error.message}`),
        );
    } else if (frame.id === null) {
      this.#breach(workerError(frame.error));
    } else {
      this.#calls.take(frame.id)?.reject(workerError(frame.error));
    }
  }

  #breach(error: Idefics2Error): void {
    this.fail(error);
    this.#onFailure?.(error);
  }
}

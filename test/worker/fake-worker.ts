import { PassThrough } from "node:stream";
import { encodeFrame, type Frame, FrameDecoder } from "../../src/protocol/frame-codec.js";
import { WorkerConnection, type WorkerConnectionOptions } from "../../src/worker/worker-connection.js";

/** The worker's side of an in-memory connection: decodes what the SDK sends and answers with frames of its own. */
export class FakeWorker {
  /** True once the SDK has ended its output stream. */
  ended = false;
  readonly #toSdk: PassThrough;
  readonly #decoder = new FrameDecoder();
  readonly #unread: Frame[] = [];
  readonly #waiting: ((frame: Frame) => void)[] = [];

  constructor(fromSdk: PassThrough, toSdk: PassThrough) {
    this.#toSdk = toSdk;
    fromSdk.on("data", (chunk: Buffer) => {
      for (const frame of this.#decoder.push(chunk)) {
        const waiter = this.#waiting.shift();
        if (waiter) waiter(frame);
        else this.#unread.push(frame);
      }
    });
    fromSdk.on("end", () => (this.ended = true));
  }

  /** The next frame the SDK sent, in the order it sent them. */
  next(): Promise<Frame> {
    const frame = this.#unread.shift();
    return frame ? Promise.resolve(frame) : new Promise((resolve) => this.#waiting.push(resolve));
  }

  /** Headers the SDK sent that no next() has taken yet, once every write so far has arrived. */
  async unread(): Promise<unknown[]> {
    await new Promise((resolve) => setImmediate(resolve));
    return this.#unread.map((frame) => frame.header);
  }

  send(header: object, payload?: Uint8Array): void {
    this.#toSdk.write(encodeFrame(header, payload));
  }

  sendBytes(bytes: Uint8Array): void {
    this.#toSdk.write(bytes);
  }

  ready(protocol = 1): void {
    this.send({ type: "ready", protocol, pid: 4242, versions: { python: "3.12.1", torch: "2.5.0", transformers: "5.0.0" } });
  }

  result(id: number, result: unknown): void {
    this.send({ type: "result", id, result });
  }

  token(id: number, text: string): void {
    this.send({ type: "event", id, event: "token", data: { text, tokenIds: [text.length] } });
  }

  error(id: number | null, error: { code: string; message: string; fix?: string; pythonType?: string; traceback?: string }): void {
    this.send({ type: "error", id, error });
  }
}

/** A connection wired to a FakeWorker through two PassThrough streams: no process involved. */
export function connect(options?: WorkerConnectionOptions): { connection: WorkerConnection; worker: FakeWorker } {
  const toWorker = new PassThrough();
  const toSdk = new PassThrough();
  return { connection: new WorkerConnection(toSdk, toWorker, options), worker: new FakeWorker(toWorker, toSdk) };
}

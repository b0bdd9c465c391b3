const DEFAULT_LIMIT = 16 * 1024;

/** Keeps the last bytes of the worker's stderr for crash reports, and hands each line to a listener. */
export class StderrTail {
  #text = "";
  #partial = "";
  readonly #limit: number;
  readonly #onLine: ((line: string) => void) | undefined;

  constructor(onLine?: (line: string) => void, limit = DEFAULT_LIMIT) {
    this.#onLine = onLine;
    this.#limit = limit;
  }

  push(chunk: Buffer): void {
    const text = chunk.toString("utf8");
    this.#text = (this.#text + text).slice(-this.#limit);
    if (!this.#onLine) return;
    const lines = (this.#partial + text).split("\n");
    this.#partial = lines.pop() ?? "";
    for (const line of lines) {
      try {
        this.#onLine(line);
      } catch {
        // The caller's listener failed: it runs inside a stream event, where a throw would end the whole program.
      }
    }
  }

  text(): string {
    return this.#text;
  }
}

import { Counter, Gauge, Histogram, Registry } from "prom-client";

// The server's Prometheus metrics, in a registry of its own (two servers in one process never share one), named
// after vLLM's where they mean the same.

/** The metrics of one server. @internal */
export class ServerMetrics {
  readonly registry = new Registry();
  /** Requests accepted and not yet generating: fetching pictures, waiting for the worker, prefilling. */
  readonly queueDepth: Gauge;
  /** Requests generating tokens. */
  readonly running: Gauge;
  readonly requests: Counter<"status" | "stream">;
  readonly promptTokens: Counter;
  readonly generationTokens: Counter;
  readonly timeToFirstToken: Histogram;
  readonly timePerOutputToken: Histogram;
  readonly requestDuration: Histogram;
  // Recent request durations (exponential average), for Retry-After.
  #averageSeconds = 1;

  constructor() {
    const registers = [this.registry];
    this.queueDepth = new Gauge({
      name: "idefics2_queue_depth",
      help: "Requests accepted and not yet generating (fetching pictures, queued for the worker, prefilling)",
      registers,
    });
    this.running = new Gauge({ name: "idefics2_requests_running", help: "Requests generating tokens", registers });
    this.requests = new Counter({
      name: "idefics2_requests_total",
      help: "Chat completion requests answered, by HTTP status (499: the client left) and streaming",
      labelNames: ["status", "stream"],
      registers,
    });
    this.promptTokens = new Counter({
      name: "idefics2_prompt_tokens_total",
      help: "Prompt tokens processed (image tokens included)",
      registers,
    });
    this.generationTokens = new Counter({ name: "idefics2_generation_tokens_total", help: "Tokens generated", registers });
    this.timeToFirstToken = new Histogram({
      name: "idefics2_time_to_first_token_seconds",
      help: "Time from a request's arrival to its first generated text",
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80],
      registers,
    });
    this.timePerOutputToken = new Histogram({
      name: "idefics2_time_per_output_token_seconds",
      help: "Time between two consecutive pieces of generated text (per-token latency)",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5],
      registers,
    });
    this.requestDuration = new Histogram({
      name: "idefics2_request_duration_seconds",
      help: "Time from a request's arrival to its last byte",
      buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320],
      registers,
    });
  }

  /** Counts a finished request. */
  finished(status: number, stream: boolean, seconds: number): void {
    this.requests.inc({ status: String(status), stream: String(stream) });
    this.requestDuration.observe(seconds);
    if (status === 200) this.#averageSeconds = 0.8 * this.#averageSeconds + 0.2 * seconds;
  }

  /** A client told to come back later waits about one recent request's time (1–60 s). */
  retryAfterSeconds(): number {
    return Math.min(60, Math.max(1, Math.ceil(this.#averageSeconds)));
  }
}

import cliProgress from "cli-progress";
import { printable } from "../printable.js";

/**
 * An event the display shows: load()'s LoadProgress and ensurePythonEnvironment()'s SetupProgress as they are, or
 * any step a command reports (`elapsedMs` is then measured here). `log` events (pip's and venv's lines) are not
 * shown: set-up keeps them in its log file.
 */
export interface DisplayEvent {
  type: "stage" | "log" | "progress";
  stage: string;
  message: string;
  elapsedMs?: number;
  done?: number;
  total?: number;
  unit?: "bytes" | "items" | "percent";
}

/** What an answer's summary is read from: a GenerationResult has it. */
export interface AnswerSummary {
  usage: { completionTokens: number };
  timings: { totalMs: number; prefillMs: number; decodeTokensPerSecond: number };
}

export interface ProgressDisplayOptions {
  /** Where the display is written. Default: process.stderr (stdout carries the answer, or --json). */
  stream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** Redraw one live line in place (a terminal), or write plain lines (CI, pipes, files). Default: `stream.isTTY`. */
  live?: boolean;
  /**
   * Whether the answer is written to the same terminal as the display (stdout a terminal too): a live line would
   * then mix with the answer's text, so tokens/s is shown only when the answer ends. Default: `live` and
   * process.stdout is a TTY.
   */
  answerOnSameTerminal?: boolean;
  /** Plain lines: the least time between two lines of counts of one step (default 2000 ms). */
  plainIntervalMs?: number;
}

/** The display of one command: a load's steps with their counts and times, then the answers' tokens per second. */
export interface ProgressDisplay {
  /** Shows one event: pass it as load()'s or ensurePythonEnvironment()'s `onProgress`. */
  onProgress(event: DisplayEvent): void;
  /**
   * While an answer streams: `count` tokens (or deltas) so far, `elapsedMs` since the request was sent. Shown live
   * (tokens, tokens/s) unless the answer shares the terminal; plain lines at most every `plainIntervalMs`.
   */
  tokens(count: number, elapsedMs: number): void;
  /** The answer ended: one line with its tokens, tokens/s (from `result` when given) and time to the first token. */
  answered(result?: AnswerSummary): void;
  /** The steps are over (the model loaded): the last step is marked done, with `message` as a last line. */
  done(message?: string): void;
  /** The step under way failed: it is marked so and the live line ends (the caller prints the error). */
  fail(): void;
}

/**
 * Runs a step that reports through `onProgress` (load(), ensurePythonEnvironment()) on the display: when it ends the
 * last step is marked done (with `message(value)` as a last line), or failed when it throws.
 */
export async function showingProgress<T>(
  display: ProgressDisplay,
  run: (onProgress: (event: DisplayEvent) => void) => Promise<T>,
  message?: (value: T) => string,
): Promise<T> {
  let value: T;
  try {
    value = await run((event) => display.onProgress(event));
  } catch (error) {
    display.fail();
    throw error;
  }
  display.done(message?.(value));
  return value;
}

/** Creates the display; nothing is written until the first event. */
export function createProgressDisplay(options: ProgressDisplayOptions = {}): ProgressDisplay {
  const stream = options.stream ?? process.stderr;
  const live = options.live ?? stream.isTTY === true;
  const shared = options.answerOnSameTerminal ?? (live && process.stdout.isTTY === true);
  return live ? new LiveDisplay(stream, shared) : new PlainDisplay(stream, options.plainIntervalMs ?? 2000);
}

interface Step {
  stage: string;
  message: string;
  startedMs: number;
  count?: { done: number; total?: number; unit: NonNullable<DisplayEvent["unit"]>; message: string };
}

interface Answer {
  count: number;
  elapsedMs: number;
  first?: { count: number; elapsedMs: number };
}

// The clock both displays share: an event's own `elapsedMs` when it has one, else the time since the first event.
class Clock {
  #started: number | undefined;
  #offset = 0;
  now(event?: { elapsedMs?: number | undefined }): number {
    const own = performance.now();
    this.#started ??= own;
    if (event?.elapsedMs !== undefined) this.#offset = event.elapsedMs - (own - this.#started);
    return Math.max(0, own - this.#started + this.#offset);
  }
}

class PlainDisplay implements ProgressDisplay {
  readonly #clock = new Clock();
  #step: Step | undefined;
  readonly #lastLine = new Map<string, number>();
  #answer: Answer | undefined;
  #answerLine = -Infinity;

  constructor(
    readonly stream: NodeJS.WritableStream,
    readonly intervalMs: number,
  ) {}

  onProgress(event: DisplayEvent): void {
    const now = this.#clock.now(event);
    if (event.type === "log") return;
    if (event.type === "stage" || !this.#step || this.#step.stage !== event.stage) {
      this.#step = { stage: event.stage, message: event.message, startedMs: now };
      if (event.type === "stage") {
        this.#line(now, event.stage, event.message);
        return;
      }
    }
    if (event.type !== "progress" || event.done === undefined || event.unit === undefined) return;
    // A count's last line always shows, and the first of a known number of items (installing 42 packages, loading
    // 92 tensors: it may be all there is for a while); the rest at most once an interval for each step and unit.
    const key = `${event.stage}:${event.unit}`;
    const complete = event.total !== undefined && event.done >= event.total;
    const starts = event.unit === "items" && event.total !== undefined && event.done === 0;
    const last = this.#lastLine.get(key);
    if (!complete && !starts && last !== undefined && now - last < this.intervalMs) return;
    this.#lastLine.set(key, now);
    this.#line(now, event.stage, `${event.message}: ${countText(event.done, event.total, event.unit)}`);
  }

  tokens(count: number, elapsedMs: number): void {
    this.#answer = answerAt(this.#answer, count, elapsedMs);
    const now = this.#clock.now();
    if (now - this.#answerLine < this.intervalMs) return;
    this.#answerLine = now;
    this.#line(now, "answer", answerText(this.#answer));
  }

  answered(result?: AnswerSummary): void {
    this.#line(this.#clock.now(), "answer", summaryText(this.#answer, result));
    this.#answer = undefined;
    this.#answerLine = -Infinity;
  }

  done(message?: string): void {
    const now = this.#clock.now();
    if (message) this.#line(now, "done", message);
    this.#step = undefined;
  }

  fail(): void {
    if (this.#step) this.#line(this.#clock.now(), this.#step.stage, `failed after ${seconds(this.#clock.now() - this.#step.startedMs)}`);
    this.#step = undefined;
  }

  #line(now: number, stage: string, text: string): void {
    this.stream.write(`[${seconds(now).padStart(8)}] ${stage.padEnd(10)} ${printable(text)}\n`);
  }
}

// One live line (cli-progress), redrawn ten times a second: the step under way, its count as a bar, its time;
// each finished step stays above it as a line with its duration.
class LiveDisplay implements ProgressDisplay {
  readonly #clock = new Clock();
  #bars: cliProgress.MultiBar | undefined;
  #bar: cliProgress.SingleBar | undefined;
  #step: Step | undefined;
  #answer: Answer | undefined;

  constructor(
    readonly stream: NodeJS.WritableStream & { columns?: number },
    readonly answerOnSameTerminal: boolean,
  ) {}

  onProgress(event: DisplayEvent): void {
    const now = this.#clock.now(event);
    if (event.type === "log") return;
    const step = this.#step;
    if (event.type === "stage" || !step || step.stage !== event.stage) {
      this.#finishStep(now, "✔");
      this.#step = { stage: event.stage, message: event.message, startedMs: now };
    }
    const current = this.#step as Step;
    if (event.type === "progress" && event.done !== undefined && event.unit !== undefined) {
      current.count = {
        done: event.done,
        unit: event.unit,
        message: event.message,
        ...(event.total === undefined ? {} : { total: event.total }),
      };
    }
    this.#show();
  }

  tokens(count: number, elapsedMs: number): void {
    this.#answer = answerAt(this.#answer, count, elapsedMs);
    if (this.answerOnSameTerminal) return;
    this.#show();
  }

  answered(result?: AnswerSummary): void {
    const text = summaryText(this.#answer, result);
    this.#answer = undefined;
    if (this.#bars) {
      this.#bars.log(`${text}\n`);
      this.#stop();
    } else {
      this.stream.write(`${text}\n`);
    }
  }

  done(message?: string): void {
    const now = this.#clock.now();
    this.#finishStep(now, "✔");
    if (message) this.#log(message);
    this.#stop();
  }

  fail(): void {
    this.#finishStep(this.#clock.now(), "✖");
    this.#stop();
  }

  #finishStep(now: number, mark: string): void {
    const step = this.#step;
    if (!step) return;
    this.#step = undefined;
    const count = step.count ? ` · ${countText(step.count.done, step.count.total, step.count.unit)}` : "";
    this.#log(`${mark} ${step.stage.padEnd(10)} ${printable(step.message)}${count} (${seconds(now - step.startedMs)})`);
  }

  #log(text: string): void {
    if (this.#bars) this.#bars.log(`${text}\n`);
    else this.stream.write(`${text}\n`);
  }

  // Starts the live line when there is something to show, and redraws it now.
  #show(): void {
    if (!this.#bars) {
      this.#bars = new cliProgress.MultiBar({
        stream: this.stream,
        format: (options, params) => this.#format(options, params),
        clearOnComplete: true,
        hideCursor: false,
        gracefulExit: false,
        barsize: 20,
        barCompleteChar: "█",
        barIncompleteChar: "░",
        fps: 10,
      });
      // Its redraw timer never keeps the process alive (a command that fails ends without waiting for it).
      const bars = this.#bars;
      bars.on("update-post", () => (bars as unknown as { timer?: NodeJS.Timeout | null }).timer?.unref());
      this.#bar = bars.create(1, 0);
    }
    const count = this.#step?.count;
    this.#bar?.setTotal(count?.total ?? 1);
    this.#bar?.update(count?.done ?? 0);
    this.#bars.update();
  }

  #stop(): void {
    if (!this.#bars) return;
    this.#bars.update();
    this.#bars.stop();
    this.#bars = undefined;
    this.#bar = undefined;
  }

  #format(options: cliProgress.Options, params: cliProgress.Params): string {
    const now = this.#clock.now();
    const spinner = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"[Math.floor(now / 100) % 10];
    // A terminal that gives no width (0, as under `script` without one) is taken as 100 columns.
    const width = Math.max(40, (this.stream.columns || 100) - 1);
    if (this.#answer && !this.answerOnSameTerminal) return clip(`${spinner} ${"answer".padEnd(10)} ${answerText(this.#answer)}`, width);
    const step = this.#step;
    if (!step) return "";
    const count = step.count;
    const time = seconds(now - step.startedMs);
    if (!count) return clip(`${spinner} ${step.stage.padEnd(10)} ${printable(step.message)} · ${time}`, width);
    const bar = count.total ? `${cliProgress.Format.BarFormat(params.progress, options)} ` : "";
    const text = `${spinner} ${step.stage.padEnd(10)} ${bar}${countText(count.done, count.total, count.unit)} · ${time} · ${printable(count.message)}`;
    return clip(text, width);
  }
}

function answerAt(answer: Answer | undefined, count: number, elapsedMs: number): Answer {
  const first = answer?.first ?? (count > 0 ? { count, elapsedMs } : undefined);
  return { count, elapsedMs, ...(first ? { first } : {}) };
}

// Tokens per second after the first token: the decode rate, without the time spent reading the prompt.
function rate(answer: Answer): number | undefined {
  const { first } = answer;
  if (!first || answer.count <= first.count || answer.elapsedMs <= first.elapsedMs) return undefined;
  return ((answer.count - first.count) * 1000) / (answer.elapsedMs - first.elapsedMs);
}

function answerText(answer: Answer): string {
  const perSecond = rate(answer);
  const speed = perSecond === undefined ? "" : ` · ${perSecond.toFixed(1)} tokens/s`;
  const first = answer.first ? ` · first token after ${seconds(answer.first.elapsedMs)}` : " · reading the prompt";
  return `${answer.count} token${answer.count === 1 ? "" : "s"}${speed}${first} · ${seconds(answer.elapsedMs)}`;
}

function summaryText(answer: Answer | undefined, result: AnswerSummary | undefined): string {
  if (!result) return answer ? answerText(answer) : "no answer";
  const tokens = result.usage.completionTokens;
  const perSecond = Number.isFinite(result.timings.decodeTokensPerSecond)
    ? ` · ${result.timings.decodeTokensPerSecond.toFixed(1)} tokens/s`
    : "";
  const first = answer?.first ? ` · first token after ${seconds(answer.first.elapsedMs)}` : "";
  return `${tokens} token${tokens === 1 ? "" : "s"} in ${seconds(result.timings.totalMs)}${perSecond}${first}`;
}

/** "35 ms", "1.2 s", "2 min 03 s". @internal */
export function seconds(ms: number): string {
  const total = Math.max(0, ms) / 1000;
  if (total < 1) return `${Math.round(ms)} ms`;
  if (total < 60) return `${total.toFixed(1)} s`;
  const minutes = Math.floor(total / 60);
  return `${minutes} min ${String(Math.floor(total - minutes * 60)).padStart(2, "0")} s`;
}

/** "12.3 MB of 43.1 MB (28%)", "40 of 92 items (43%)", "3 items", "40%". @internal */
export function countText(done: number, total: number | undefined, unit: NonNullable<DisplayEvent["unit"]>): string {
  if (unit === "percent") return `${Math.round(done)}%`;
  const show = unit === "bytes" ? bytesText : (value: number) => String(value);
  const noun = unit === "items" ? ((total ?? done) === 1 ? " item" : " items") : "";
  if (total === undefined || total <= 0) return `${show(done)}${noun}`;
  return `${show(done)} of ${show(total)}${noun} (${Math.floor((Math.min(done, total) / total) * 100)}%)`;
}

// Decimal units, as pip prints sizes (43.1 MB).
function bytesText(bytes: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function clip(text: string, width: number): string {
  const characters = [...text];
  return characters.length <= width ? text : `${characters.slice(0, width - 1).join("")}…`;
}

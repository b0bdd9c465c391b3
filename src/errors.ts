import { z } from "zod";
import { lastOutputLine, printable, printableExcerpt } from "./printable.js";

// Every failure the package reports carries one of these codes; they are stable across releases.
export const ErrorCode = z.enum([
  "PYTHON_NOT_FOUND",
  "PYTHON_TOO_OLD",
  "ENV_SETUP_FAILED",
  "MISSING_PYTHON_PACKAGE",
  "CUDA_UNAVAILABLE",
  "BNB_BACKEND_UNAVAILABLE",
  "MODEL_NOT_FOUND",
  "MODEL_LOAD_FAILED",
  "OUT_OF_MEMORY",
  "INVALID_MESSAGES",
  "INVALID_OPTIONS",
  "IMAGE_UNREADABLE",
  "IMAGE_TOO_LARGE",
  "IMAGE_FETCH_FAILED",
  "IMAGE_URL_REFUSED",
  "CONTEXT_OVERFLOW",
  "GENERATION_FAILED",
  "INCOMPLETE_STRUCTURE",
  "INVALID_STRUCTURE",
  "QUEUE_FULL",
  "WORKER_CRASHED",
  "PROTOCOL_ERROR",
  "ABORTED",
  "TIMED_OUT",
  "CLOSED",
]);
export type ErrorCode = z.infer<typeof ErrorCode>;

export interface Idefics2ErrorOptions {
  /** What the user can do about it, when there is something to do. */
  fix?: string | undefined;
  cause?: unknown;
  /** The Python exception's class name, when the failure happened in the worker. */
  pythonType?: string | undefined;
  /** The Python traceback, kept for debugging and never printed by the package. */
  pythonTraceback?: string | undefined;
}

// Longer messages are cut: they quote input, and input can be any size. Builders list a few items and count the rest.
const MAX_MESSAGE_LENGTH = 1000;

/**
 * Base class of every error this package throws: `code` is stable, `message` is one line (control characters in
 * it escaped, at most 1,000 characters), `fix` says what to do.
 */
export class Idefics2Error extends Error {
  override name = "Idefics2Error";
  readonly code: ErrorCode;
  readonly fix: string | undefined;
  readonly pythonType: string | undefined;
  readonly pythonTraceback: string | undefined;

  constructor(code: ErrorCode, message: string, options: Idefics2ErrorOptions = {}) {
    super(printableExcerpt(message, MAX_MESSAGE_LENGTH), options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.fix = options.fix === undefined ? undefined : printable(options.fix);
    this.pythonType = options.pythonType;
    this.pythonTraceback = options.pythonTraceback;
  }

  /** The message followed by the fix, as one line for a terminal. */
  get summary(): string {
    return this.fix ? `${this.message} — ${this.fix}` : this.message;
  }
}

type CodeOf<C extends ErrorCode> = C;

/** The Python interpreter or its packages are missing, too old, or could not be installed. */
export class PythonEnvironmentError extends Idefics2Error {
  override name = "PythonEnvironmentError";
  declare readonly code: CodeOf<"PYTHON_NOT_FOUND" | "PYTHON_TOO_OLD" | "ENV_SETUP_FAILED" | "MISSING_PYTHON_PACKAGE">;
}

/** Messages or options that do not fit their schema. */
export class InvalidInputError extends Idefics2Error {
  override name = "InvalidInputError";
  declare readonly code: CodeOf<"INVALID_MESSAGES" | "INVALID_OPTIONS">;
}

/** An image that cannot be read or fetched, is larger than the limits allow, or whose URL points where it may not. */
export class ImageError extends Idefics2Error {
  override name = "ImageError";
  declare readonly code: CodeOf<"IMAGE_UNREADABLE" | "IMAGE_TOO_LARGE" | "IMAGE_FETCH_FAILED" | "IMAGE_URL_REFUSED">;
}

/** The model could not be found or loaded with the requested device and quantization. */
export class ModelLoadError extends Idefics2Error {
  override name = "ModelLoadError";
  declare readonly code: CodeOf<"MODEL_NOT_FOUND" | "MODEL_LOAD_FAILED" | "CUDA_UNAVAILABLE" | "BNB_BACKEND_UNAVAILABLE">;
}

/** Generation failed after the request was accepted. */
export class GenerationError extends Idefics2Error {
  override name = "GenerationError";
  declare readonly code: CodeOf<"GENERATION_FAILED" | "CONTEXT_OVERFLOW" | "OUT_OF_MEMORY">;
}

/** What a structured answer that failed was: the text the model wrote (never a half object) and the result it came in. */
export interface StructuredOutputDetails {
  /** The answer's text as far as it went. */
  text: string;
  /** The whole result (token ids, finish reason, usage, timings). */
  result: unknown;
}

/**
 * A structured answer (`schema`, `choices`, `regex`) that is not a whole, valid value: `INCOMPLETE_STRUCTURE` when
 * `maxNewTokens` ran out before the grammar was complete (finish reason `incomplete_structure`), `INVALID_STRUCTURE`
 * when the text does not parse or the schema refuses it. `text` holds the partial answer.
 */
export class StructuredOutputError extends Idefics2Error {
  override name = "StructuredOutputError";
  declare readonly code: CodeOf<"INCOMPLETE_STRUCTURE" | "INVALID_STRUCTURE">;
  /** The answer's text as far as it went. */
  readonly text: string;
  /** The whole generation result, for its token ids, usage and timings. */
  readonly result: unknown;

  constructor(
    code: "INCOMPLETE_STRUCTURE" | "INVALID_STRUCTURE",
    message: string,
    details: StructuredOutputDetails,
    options: Idefics2ErrorOptions = {},
  ) {
    super(code, message, options);
    this.text = details.text;
    this.result = details.result;
  }
}

export interface WorkerCrashDetails {
  exitCode: number | null;
  signal: string | null;
  stderrTail: string;
}

/** More generations are waiting than the model's `maxQueue` allows. */
export class QueueFullError extends Idefics2Error {
  override name = "QueueFullError";
  declare readonly code: "QUEUE_FULL";
}

/** The Python worker exited while calls were pending. */
export class WorkerCrashedError extends Idefics2Error {
  override name = "WorkerCrashedError";
  declare readonly code: "WORKER_CRASHED";
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stderrTail: string;

  constructor(details: WorkerCrashDetails, options: Idefics2ErrorOptions = {}) {
    const how = details.signal ? `was killed by ${details.signal}` : `exited with code ${details.exitCode}`;
    const tail = lastOutputLine(details.stderrTail);
    super("WORKER_CRASHED", `The Python worker ${how}${tail ? `: ${tail}` : ""}`, {
      fix: "Run `idefics2 doctor` to check the environment; the error's stderrTail holds the worker's last output.",
      ...options,
    });
    this.exitCode = details.exitCode;
    this.signal = details.signal;
    this.stderrTail = details.stderrTail;
  }
}

/** The worker spoke something that is not the protocol. */
export class ProtocolError extends Idefics2Error {
  override name = "ProtocolError";
  declare readonly code: "PROTOCOL_ERROR";
}

/** The caller's AbortSignal fired; `cause` holds the signal's reason. */
export class AbortError extends Idefics2Error {
  override name = "AbortError";
  declare readonly code: "ABORTED";

  constructor(reason?: unknown) {
    super("ABORTED", "The operation was aborted", { cause: reason });
  }
}

/** A call ran past its timeout. */
export class TimeoutError extends Idefics2Error {
  override name = "TimeoutError";
  declare readonly code: "TIMED_OUT";
}

/** The model or worker was closed before or during the call. */
export class ClosedError extends Idefics2Error {
  override name = "ClosedError";
  declare readonly code: "CLOSED";

  constructor(what = "The model") {
    super("CLOSED", `${what} is closed`, { fix: "Load the model again with Idefics2.load()." });
  }
}

const classByCode: Record<ErrorCode, new (code: never, message: string, options?: Idefics2ErrorOptions) => Idefics2Error> = {
  PYTHON_NOT_FOUND: PythonEnvironmentError,
  PYTHON_TOO_OLD: PythonEnvironmentError,
  ENV_SETUP_FAILED: PythonEnvironmentError,
  MISSING_PYTHON_PACKAGE: PythonEnvironmentError,
  CUDA_UNAVAILABLE: ModelLoadError,
  BNB_BACKEND_UNAVAILABLE: ModelLoadError,
  MODEL_NOT_FOUND: ModelLoadError,
  MODEL_LOAD_FAILED: ModelLoadError,
  OUT_OF_MEMORY: GenerationError,
  INVALID_MESSAGES: InvalidInputError,
  INVALID_OPTIONS: InvalidInputError,
  IMAGE_UNREADABLE: ImageError,
  IMAGE_TOO_LARGE: ImageError,
  IMAGE_FETCH_FAILED: ImageError,
  IMAGE_URL_REFUSED: ImageError,
  CONTEXT_OVERFLOW: GenerationError,
  GENERATION_FAILED: GenerationError,
  INCOMPLETE_STRUCTURE: Idefics2Error,
  INVALID_STRUCTURE: Idefics2Error,
  QUEUE_FULL: QueueFullError,
  WORKER_CRASHED: Idefics2Error,
  PROTOCOL_ERROR: ProtocolError,
  ABORTED: Idefics2Error,
  TIMED_OUT: TimeoutError,
  CLOSED: Idefics2Error,
};

/** Builds the error class that belongs to `code`; used where errors arrive as data (worker frames). */
export function errorForCode(code: ErrorCode, message: string, options: Idefics2ErrorOptions = {}): Idefics2Error {
  if (code === "ABORTED") return new AbortError(options.cause);
  const ErrorClass = classByCode[code];
  return new ErrorClass(code as never, message, options);
}

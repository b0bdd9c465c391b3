import {
  AbortError,
  ClosedError,
  GenerationError,
  Idefics2Error,
  ImageError,
  InvalidInputError,
  ModelLoadError,
  PythonEnvironmentError,
  QueueFullError,
  TimeoutError,
  WorkerCrashedError,
} from "../errors.js";

/** OpenAI's error types, as its clients read them. */
export type ApiErrorType = "invalid_request_error" | "authentication_error" | "not_found_error" | "rate_limit_error" | "server_error";

/** The body of every error answer: OpenAI's `{ error: { message, type, param, code } }`. */
export interface ApiErrorBody {
  error: { message: string; type: ApiErrorType; param: string | null; code: string | null };
}

/** An error answer: its HTTP status, OpenAI-shaped body and extra headers (Retry-After, WWW-Authenticate). @internal */
export class ApiError extends Error {
  override name = "ApiError";
  readonly status: number;
  readonly type: ApiErrorType;
  readonly param: string | null;
  readonly code: string | null;
  readonly headers: Record<string, string>;

  constructor(
    status: number,
    message: string,
    options: { type?: ApiErrorType; param?: string | null; code?: string | null; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.status = status;
    this.type = options.type ?? (status >= 500 ? "server_error" : "invalid_request_error");
    this.param = options.param ?? null;
    this.code = options.code ?? null;
    this.headers = options.headers ?? {};
  }

  get body(): ApiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** How a request ended without its answer: the client left, or the server is shutting down. @internal */
export interface AbortCauses {
  clientLeft: boolean;
  shuttingDown: boolean;
}

/**
 * The HTTP answer for an SDK error. The `code` is the SDK's stable error code (`IMAGE_URL_REFUSED`, `QUEUE_FULL`,
 * …), except a prompt too long for the context, which is OpenAI's `context_length_exceeded`. @internal
 */
export function apiErrorFor(error: unknown, causes: AbortCauses, retryAfterSeconds: () => number): ApiError {
  if (error instanceof ApiError) return error;
  const message = error instanceof Idefics2Error ? error.summary : "";
  if (error instanceof AbortError || error instanceof ClosedError) {
    // A client that left reads nothing; the status only counts it (nginx's 499, "client closed request").
    if (causes.clientLeft && !causes.shuttingDown) return new ApiError(499, "The client closed the request", { code: "client_closed" });
    return new ApiError(503, "The server is shutting down; the request was cancelled", {
      code: "shutting_down",
      headers: { "Retry-After": String(retryAfterSeconds()) },
    });
  }
  if (error instanceof QueueFullError) {
    return new ApiError(429, message, {
      type: "rate_limit_error",
      code: error.code,
      headers: { "Retry-After": String(retryAfterSeconds()) },
    });
  }
  if (error instanceof InvalidInputError) return new ApiError(400, message, { code: error.code, param: paramOf(error.message) });
  if (error instanceof ImageError) return new ApiError(400, message, { code: error.code, param: "messages" });
  if (error instanceof GenerationError && error.code === "CONTEXT_OVERFLOW") {
    return new ApiError(400, message, { code: "context_length_exceeded", param: "messages" });
  }
  if (error instanceof TimeoutError) return new ApiError(504, message, { code: error.code });
  if (error instanceof WorkerCrashedError || error instanceof ModelLoadError || error instanceof PythonEnvironmentError) {
    // The next request starts a new worker (restartOnCrash): worth retrying soon.
    return new ApiError(503, message, { code: error.code, headers: { "Retry-After": String(retryAfterSeconds()) } });
  }
  if (error instanceof Idefics2Error) return new ApiError(500, message, { code: error.code });
  return new ApiError(500, "The server failed to answer the request", { code: "internal_error" });
}

// The SDK names the bad option in backquotes: "Invalid generation option: `maxNewTokens`: …".
function paramOf(message: string): string | null {
  return /`([^`]+)`/.exec(message)?.[1] ?? null;
}

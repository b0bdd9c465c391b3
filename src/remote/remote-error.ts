import { AbortError, ErrorCode, errorForCode, GenerationError, type Idefics2Error, InvalidInputError, QueueFullError } from "../errors.js";
import { printableExcerpt } from "../printable.js";

/** An error answer of an OpenAI-compatible server: its status and body (`{ error: { message, type, param, code } }`). */
export interface RemoteFailure {
  status: number | undefined;
  body: unknown;
  retryAfter?: string | null;
}

/**
 * The SDK's error for a server's error answer, so code that catches a local model's errors catches a remote one's:
 * this package's server sends the SDK's own codes (IMAGE_URL_REFUSED, QUEUE_FULL, …); other servers' answers are
 * classed by their status. The status and body are the error's `cause`. @internal
 */
export function remoteError(failure: RemoteFailure): Idefics2Error {
  const { status } = failure;
  const error = errorBody(failure.body);
  const said = printableExcerpt(error?.message ?? (typeof failure.body === "string" ? failure.body : ""), 600) || "no message";
  const where = status === undefined ? "The server failed the request" : `The server answered ${status}`;
  const options = { cause: failure };
  const code = error?.code;
  if (code === "context_length_exceeded") return new GenerationError("CONTEXT_OVERFLOW", said, options);
  const known = typeof code === "string" ? ErrorCode.safeParse(code) : undefined;
  if (known?.success && known.data !== "ABORTED") return errorForCode(known.data, said, options);
  if (status === 401 || status === 403) {
    return new InvalidInputError("INVALID_OPTIONS", `${where}: ${said}`, {
      ...options,
      fix: "Pass the server's key as `apiKey` to connect().",
    });
  }
  if (status === 404) {
    return new InvalidInputError("INVALID_OPTIONS", `${where}: ${said}`, {
      ...options,
      fix: "Check `baseURL` (it ends with /v1) and `model` (GET /v1/models lists the server's).",
    });
  }
  if (status === 429) {
    const after = failure.retryAfter ? ` (retry after ${failure.retryAfter} s)` : "";
    return new QueueFullError("QUEUE_FULL", `${where}: ${said}${after}`, {
      ...options,
      fix: "Retry later, or send fewer requests at once.",
    });
  }
  if (status !== undefined && status >= 400 && status < 500) {
    const aboutMessages = typeof error?.param === "string" && error.param.startsWith("messages");
    return new InvalidInputError(aboutMessages || status === 413 ? "INVALID_MESSAGES" : "INVALID_OPTIONS", `${where}: ${said}`, options);
  }
  return new GenerationError("GENERATION_FAILED", `${where}: ${said}`, options);
}

/** The call's own end: AbortError for its signal, or the error the fetch failed with, as the SDK's. @internal */
export function fetchFailure(error: unknown, baseURL: string): Idefics2Error {
  if (error instanceof AbortError) return error;
  const reason = error instanceof Error ? ((error.cause as Error | undefined)?.message ?? error.message) : String(error);
  return new GenerationError("GENERATION_FAILED", `Cannot reach the server at ${baseURL}: ${printableExcerpt(reason, 300)}`, {
    cause: error,
    fix: "Check that the server runs and `baseURL` is right (idefics2 serve prints it).",
  });
}

function errorBody(body: unknown): { message?: string; code?: unknown; param?: unknown } | undefined {
  if (body === null || typeof body !== "object") return undefined;
  const error = (body as { error?: unknown }).error;
  if (typeof error === "string") return { message: error };
  if (error === null || typeof error !== "object") return undefined;
  const { message, code, param } = error as Record<string, unknown>;
  return { message: typeof message === "string" ? message : undefined, code, param };
}

import { AbortError, InvalidInputError, TimeoutError } from "../errors.js";
import { parseOrThrow } from "../parse-or-throw.js";
import { checkSignal } from "../worker/check-call-options.js";
import { ConnectOptions } from "./connect-options.js";
import { fetchFailure, remoteError } from "./remote-error.js";
import { RemoteIdefics2 } from "./remote-model.js";

/**
 * Connects to an OpenAI-compatible server of Idefics2 (`idefics2 serve`, or TGI serving it) and returns a model
 * with the same `generate()`, `stream()` and `chat()` as `Idefics2.load()`'s, and the same result types:
 *
 * ```ts
 * const model = await connect({ baseURL: "http://gpu-box:8000/v1", apiKey: process.env.IDEFICS2_API_KEY });
 * ```
 *
 * Asks the server's `GET /v1/models` first (which model to name, its context), so a wrong address or key fails
 * here, with the SDK's typed errors.
 */
export async function connect(options: ConnectOptions & { signal?: AbortSignal }): Promise<RemoteIdefics2> {
  const { signal: givenSignal, ...rest } = options ?? ({} as ConnectOptions);
  const resolved = parseOrThrow(ConnectOptions, rest, "INVALID_OPTIONS", "connect option");
  const signal = checkSignal(givenSignal);
  const baseURL = resolved.baseURL.replace(/\/+$/, "");
  const headers: Record<string, string> = {
    ...resolved.headers,
    ...(resolved.apiKey === undefined ? {} : { authorization: `Bearer ${resolved.apiKey}` }),
  };
  const timeout = AbortSignal.timeout(resolved.connectTimeoutMs);
  let response: Response;
  try {
    response = await fetch(`${baseURL}/models`, { headers, signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
  } catch (error) {
    if (signal?.aborted) throw new AbortError(signal.reason);
    if (timeout.aborted)
      throw new TimeoutError("TIMED_OUT", `The server at ${baseURL} did not answer within ${resolved.connectTimeoutMs} ms`);
    throw fetchFailure(error, baseURL);
  }
  const text = await response.text().catch(() => "");
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  if (!response.ok) throw remoteError({ status: response.status, body, retryAfter: response.headers.get("retry-after") });
  const models = (body as { data?: unknown } | null)?.data;
  const listed = Array.isArray(models) ? (models as { id?: unknown; max_model_len?: unknown }[]) : [];
  const model = resolved.model ?? (typeof listed[0]?.id === "string" ? listed[0].id : undefined);
  if (model === undefined) {
    throw new InvalidInputError("INVALID_OPTIONS", `The server at ${baseURL} lists no model in GET /v1/models`, {
      fix: "Pass the model's name as `model` to connect().",
    });
  }
  const entry = listed.find((candidate) => candidate.id === model);
  const maxContext = typeof entry?.max_model_len === "number" ? entry.max_model_len : null;
  return new RemoteIdefics2({ info: { model, baseURL, maxContext }, headers, images: resolved.images });
}

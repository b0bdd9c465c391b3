import { ApiError } from "./api-error.js";

/**
 * A request's JSON body, read up to `maxBytes`: a larger one is refused with 413 from its Content-Length, or as soon
 * as the bytes read pass the limit (a chunked upload), without reading the rest. @internal
 */
export async function readJsonBody(request: Request, maxBytes: number): Promise<unknown> {
  const tooLarge = () =>
    new ApiError(413, `The request body is larger than the server's limit of ${maxBytes} bytes`, {
      code: "request_too_large",
      param: "messages",
    });
  const declared = Number(request.headers.get("content-length") ?? Number.NaN);
  if (Number.isFinite(declared) && declared > maxBytes) throw tooLarge();
  const reader = request.body?.getReader();
  if (!reader) throw new ApiError(400, "The request has no body: send the chat completion as JSON", { code: "invalid_json" });
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge();
    }
    chunks.push(value);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, "We could not parse the JSON body of your request: send the chat completion as JSON", {
      code: "invalid_json",
    });
  }
}

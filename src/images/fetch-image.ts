import { AbortError, ImageError } from "../errors.js";
import { describeUrl } from "./describe-source.js";
import { FetchImageOptions } from "./fetch-image-options.js";
import { parseOptions } from "./parse-options.js";
import { throwIfAborted } from "./throw-if-aborted.js";

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/** Downloads an image's encoded bytes over http(s): bounded in time, size and redirects, and abortable. */
export async function fetchImage(url: string | URL, options: FetchImageOptions = {}, signal?: AbortSignal): Promise<Buffer> {
  const { timeoutMs, maxBytes, maxRedirects } = parseOptions(FetchImageOptions, options, "fetchImage");
  throwIfAborted(signal);
  let current = httpUrl(url);
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const onAbort = (): void => controller.abort();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for (let redirects = 0; ; redirects += 1) {
      const response = await fetch(current, { redirect: "manual", signal: controller.signal });
      const where = describeUrl(current);
      if (REDIRECT_STATUSES.has(response.status)) {
        await response.body?.cancel();
        const location = response.headers.get("location");
        if (location === null) throw failed(where, `HTTP ${response.status} redirect without a Location header`);
        if (redirects >= maxRedirects) {
          throw failed(describeUrl(url), `more than ${maxRedirects} redirects (the \`maxRedirects\` option)`);
        }
        current = httpUrl(new URL(location, current), where);
        continue;
      }
      if (!response.ok) {
        await response.body?.cancel();
        throw failed(where, `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""}`);
      }
      return await readBody(response, maxBytes, where);
    }
  } catch (error) {
    if (signal?.aborted) throw new AbortError(signal.reason);
    if (error instanceof ImageError) throw error;
    if (controller.signal.aborted) {
      throw failed(
        describeUrl(url),
        `timed out after ${timeoutMs} ms`,
        "Raise `timeoutMs` (`fetchTimeoutMs` of loadImage), or check that the server answers.",
      );
    }
    throw failed(describeUrl(current), networkReason(error), undefined, error);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
    // Ends any connection still open (a refused body, a cut-off stream); a no-op after a complete read.
    controller.abort();
  }
}

// Only http and https are fetched, at the start and after every redirect (never file:, ftp:, data:).
function httpUrl(url: string | URL, redirectedFrom?: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (error) {
    throw failed(String(url), "not a valid URL", undefined, error);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    const via = redirectedFrom === undefined ? "" : ` (redirected from ${redirectedFrom})`;
    throw failed(`${describeUrl(parsed)}${via}`, `only http: and https: URLs are fetched, not \`${parsed.protocol}\``);
  }
  return parsed;
}

// Reads the body chunk by chunk and stops as soon as it passes the cap, so an endless body costs nothing.
async function readBody(response: Response, maxBytes: number, where: string): Promise<Buffer> {
  const declared = Number(response.headers.get("content-length") ?? Number.NaN);
  if (declared > maxBytes) {
    await response.body?.cancel();
    throw tooLarge(where, `declares ${declared} bytes`, maxBytes);
  }
  if (response.body === null) return Buffer.alloc(0);
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) {
        await reader.cancel();
        throw tooLarge(where, `sent more than ${maxBytes} bytes`, maxBytes);
      }
      chunks.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  return Buffer.concat(chunks, total);
}

function networkReason(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : "";
  return `${error.message}${cause}`;
}

function failed(where: string, reason: string, fix?: string, cause?: unknown): ImageError {
  return new ImageError("IMAGE_FETCH_FAILED", `Could not fetch ${where}: ${reason}`, { fix, cause });
}

function tooLarge(where: string, what: string, maxBytes: number): ImageError {
  return new ImageError("IMAGE_TOO_LARGE", `${where} ${what}, more than the \`maxBytes\` limit of ${maxBytes}`, {
    fix: "Raise the `maxBytes` option, or use a smaller image.",
  });
}

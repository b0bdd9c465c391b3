import type { IncomingMessage } from "node:http";
import { AbortError, ImageError } from "../errors.js";
import { FetchImageOptions } from "./fetch-image-options.js";
import { guardedLookup, PrivateAddressError, refuseLiteralHost } from "./guarded-lookup.js";
import { httpGet } from "./http-get.js";
import { parseOptions } from "./parse-options.js";
import { describeDataUrl, isDataUrl } from "./data-url.js";
import { shorten } from "./describe-source.js";
import { redactUrl, redactUrlsIn } from "./redact-url.js";
import { throwIfAborted } from "./throw-if-aborted.js";

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/**
 * Downloads an image's encoded bytes over http(s): bounded in time, size and redirects, abortable, and with
 * `blockPrivateNetwork` never into the local network. Every URL an error quotes is redacted (redactUrl).
 */
export async function fetchImage(url: string | URL, options: FetchImageOptions = {}, signal?: AbortSignal): Promise<Buffer> {
  const { timeoutMs, maxBytes, maxRedirects, blockPrivateNetwork } = parseOptions(FetchImageOptions, options, "fetchImage");
  throwIfAborted(signal);
  let current = httpUrl(url);
  let redirectedFrom: string | undefined;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const onAbort = (): void => controller.abort();
  signal?.addEventListener("abort", onAbort, { once: true });
  const lookup = blockPrivateNetwork ? guardedLookup() : undefined;
  try {
    for (let redirects = 0; ; redirects += 1) {
      const where = quoted(current);
      // An IP literal never reaches `lookup`: it is checked here, before any connection.
      const literal = blockPrivateNetwork ? refuseLiteralHost(current.hostname) : undefined;
      if (literal) throw refused(where, redirectedFrom, literal);
      const response = await httpGet(current, { lookup, signal: controller.signal });
      const status = response.statusCode ?? 0;
      if (REDIRECT_STATUSES.has(status)) {
        response.destroy();
        const location = response.headers.location;
        if (location === undefined) throw failed(where, `HTTP ${status} redirect without a Location header`);
        if (redirects >= maxRedirects) {
          throw failed(quoted(url), `more than ${maxRedirects} redirects (the \`maxRedirects\` option)`);
        }
        current = httpUrl(location, current, where);
        redirectedFrom = where;
        continue;
      }
      if (status < 200 || status > 299) {
        response.destroy();
        throw failed(where, `HTTP ${status}${response.statusMessage ? ` ${response.statusMessage}` : ""}`);
      }
      return await readBody(response, maxBytes, where, controller.signal);
    }
  } catch (error) {
    if (signal?.aborted) throw new AbortError(signal.reason);
    if (error instanceof ImageError) throw error;
    if (error instanceof PrivateAddressError) throw refused(quoted(current), redirectedFrom, error);
    if (controller.signal.aborted) {
      throw failed(
        quoted(url),
        `timed out after ${timeoutMs} ms`,
        "Raise `timeoutMs` (`fetchTimeoutMs` of loadImage), or check that the server answers.",
      );
    }
    throw failed(quoted(current), networkReason(error), undefined, error);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
    // Ends any connection still open (a refused body, a cut-off stream); a no-op after a complete read.
    controller.abort();
  }
}

// Only http and https are fetched, at the start and after every redirect (never file:, ftp:, data:).
function httpUrl(url: string | URL, base?: URL, redirectedFrom?: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url, base);
  } catch {
    // The parser's error holds the raw input; it is not kept as the cause.
    throw failed(quoted(String(url)), "not a valid URL");
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    const via = redirectedFrom === undefined ? "" : ` (redirected from ${redirectedFrom})`;
    throw failed(`${quoted(parsed)}${via}`, `only http: and https: URLs are fetched, not \`${parsed.protocol}\``);
  }
  return parsed;
}

// Reads the body chunk by chunk and stops as soon as it passes the cap, so an endless body costs nothing.
async function readBody(response: IncomingMessage, maxBytes: number, where: string, signal: AbortSignal): Promise<Buffer> {
  const declared = Number(response.headers["content-length"] ?? Number.NaN);
  if (declared > maxBytes) {
    response.destroy();
    throw tooLarge(where, `declares ${declared} bytes`, maxBytes);
  }
  const onAbort = (): void => {
    response.destroy(new Error("aborted"));
  };
  signal.addEventListener("abort", onAbort, { once: true });
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of response as AsyncIterable<Buffer>) {
      total += chunk.byteLength;
      if (total > maxBytes) throw tooLarge(where, `sent more than ${maxBytes} bytes`, maxBytes);
      chunks.push(chunk);
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    response.destroy();
  }
  return Buffer.concat(chunks, total);
}

// A network error's own words (`connect ECONNREFUSED 127.0.0.1:8080`), with any URL in them redacted.
function networkReason(error: unknown): string {
  if (!(error instanceof Error)) return redactUrlsIn(String(error));
  const own = error.message || (error as NodeJS.ErrnoException).code || error.name;
  const inner = error instanceof AggregateError ? error.errors : error.cause instanceof Error ? [error.cause] : [];
  const more = inner.map((cause: unknown) => (cause instanceof Error ? cause.message : String(cause))).filter(Boolean);
  return redactUrlsIn(more.length > 0 && !error.message ? more.join("; ") : more.length > 0 ? `${own}: ${more[0]}` : own);
}

// A URL as an error quotes it: redacted, and short (a data URL by its media type and first characters).
function quoted(url: string | URL): string {
  return isDataUrl(url) ? describeDataUrl(String(url)) : shorten(redactUrl(url));
}

function failed(where: string, reason: string, fix?: string, cause?: unknown): ImageError {
  return new ImageError("IMAGE_FETCH_FAILED", `Could not fetch ${where}: ${reason}`, { fix, cause });
}

function refused(where: string, redirectedFrom: string | undefined, refusal: PrivateAddressError): ImageError {
  const via = redirectedFrom === undefined ? "" : ` (redirected from ${redirectedFrom})`;
  return new ImageError("IMAGE_URL_REFUSED", `Refused to fetch ${where}${via}: ${refusal.message}`, {
    fix: "The `blockPrivateNetwork` image option refuses the local network; leave it on for URLs that come from others, and turn it off only for a host you trust.",
  });
}

function tooLarge(where: string, what: string, maxBytes: number): ImageError {
  return new ImageError("IMAGE_TOO_LARGE", `${where} ${what}, more than the \`maxBytes\` limit of ${maxBytes}`, {
    fix: "Raise the `maxBytes` option, or use a smaller image.",
  });
}

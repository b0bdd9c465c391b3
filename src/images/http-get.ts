import { type IncomingMessage, request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import type { LookupFunction } from "node:net";

export interface HttpGetOptions {
  /** Resolves the host for the connection; the guarded lookup when private targets are refused. */
  lookup?: LookupFunction | undefined;
  /** Destroys the request and its socket, before or after the response headers. */
  signal: AbortSignal;
}

/**
 * One GET of `url`, resolved with the response headers. Each call opens a connection of its own (no pooled socket),
 * so every connection goes through `lookup`. Credentials in the URL are sent as basic auth to that URL only.
 */
export function httpGet(url: URL, { lookup, signal }: HttpGetOptions): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const request = (url.protocol === "https:" ? httpsRequest : httpRequest)(
      {
        protocol: url.protocol,
        hostname: url.hostname.replace(/^\[|\]$/g, ""),
        port: url.port === "" ? undefined : Number(url.port),
        path: `${url.pathname}${url.search}`,
        method: "GET",
        // Pictures are compressed already; identity keeps the byte cap a cap on what is decoded.
        headers: { accept: "image/*,*/*;q=0.8", "accept-encoding": "identity", "user-agent": "idefics2" },
        auth: url.username || url.password ? `${decoded(url.username)}:${decoded(url.password)}` : undefined,
        agent: false,
        lookup,
        signal,
      },
      resolve,
    );
    // Every error settles the promise or is dropped after it settled: none may go unheard and crash the process.
    request.on("error", reject);
    request.end();
  });
}

function decoded(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

import { InvalidInputError } from "../errors.js";
import { parseOrThrow } from "../parse-or-throw.js";
import { isLoopbackHost, type ResolvedServerOptions, ServerOptions } from "./server-options.js";

/**
 * The server's options, checked before anything starts (serve() checks them before loading the model): a host
 * other than loopback is refused without an API key. @internal
 */
export function checkServerOptions(options: unknown): ResolvedServerOptions {
  const resolved = parseOrThrow(ServerOptions, options ?? {}, "INVALID_OPTIONS", "server option");
  if (!isLoopbackHost(resolved.host) && resolved.apiKey === undefined) {
    throw new InvalidInputError(
      "INVALID_OPTIONS",
      `Refusing to listen on ${resolved.host} without an API key: anyone who reaches it could use the model`,
      {
        fix: "Set `apiKey` (idefics2 serve: --api-key or IDEFICS2_API_KEY), or listen on 127.0.0.1.",
      },
    );
  }
  return resolved;
}

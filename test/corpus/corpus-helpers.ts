import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { expect } from "vitest";
import type { Idefics2Error } from "../../src/errors.js";
import { image, user } from "../../src/messages.js";
import type { Idefics2 } from "../../src/model.js";
import { demoSecond } from "../helpers/pictures.js";

/** How long a refusal may take: every bad input is caught in well under this, on two CPU cores. */
export const QUICK_MS = 4000;

type ErrorClass = abstract new (...args: never[]) => Idefics2Error;

/**
 * Runs `call`, which must reject with `errorClass` and `code`, within `withinMs`, with a one-line message that
 * matches `message`; returns the error for further checks.
 */
export async function expectRefusal(
  call: () => Promise<unknown>,
  errorClass: ErrorClass,
  code: string,
  message: RegExp,
  withinMs = QUICK_MS,
): Promise<Idefics2Error> {
  const started = performance.now();
  const outcome = await call().then(
    (value: unknown) => ({ value }),
    (error: unknown) => ({ error }),
  );
  const elapsed = performance.now() - started;
  if (!("error" in outcome)) throw new Error(`expected a ${code} refusal, got a result: ${JSON.stringify(outcome.value).slice(0, 200)}`);
  const error = outcome.error as Idefics2Error;
  expect(error, `${String(error)}`).toBeInstanceOf(errorClass);
  expect({ code: error.code, message: error.message }).toMatchObject({ code, message: expect.stringMatching(message) });
  expect(error.message).not.toMatch(/\n/);
  expect(error.message.length).toBeLessThan(400);
  expect(elapsed, `refused after ${Math.round(elapsed)} ms`).toBeLessThan(withinMs);
  return error;
}

export const colourQuestion = "What colour is the shape?";

/** The model still serves a normal request: the blue picture's colour. */
export async function expectServes(model: Idefics2): Promise<void> {
  const result = await model.generate([user(image(demoSecond), colourQuestion)], { maxNewTokens: 12 });
  expect(result.text.toLowerCase()).toContain("blue");
  expect(result.tokenIds.length).toBeGreaterThan(0);
}

export interface LocalServer {
  url: (path: string) => string;
  close: () => Promise<void>;
}

type Handler = (request: import("node:http").IncomingMessage, response: import("node:http").ServerResponse) => void;

/** An http server on 127.0.0.1 with one handler per path; close() also ends connections left hanging. */
export async function localServer(routes: Record<string, Handler>): Promise<LocalServer> {
  const server: Server = createServer((request, response) => {
    const handler = routes[new URL(request.url ?? "/", "http://x").pathname];
    if (handler) return handler(request, response);
    response.writeHead(404).end("not found");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: (path) => `http://127.0.0.1:${port}${path}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A 127.0.0.1 port nothing listens on: bound, then released. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Streams 64 KiB chunks for as long as the client reads, without a Content-Length: a body that never ends. */
export function endlessBody(response: import("node:http").ServerResponse): void {
  const chunk = Buffer.alloc(64 * 1024, 0xab);
  response.writeHead(200, { "content-type": "image/jpeg" });
  let open = true;
  response.on("close", () => {
    open = false;
  });
  const pump = (): void => {
    while (open && response.write(chunk));
    if (open) response.once("drain", pump);
  };
  pump();
}

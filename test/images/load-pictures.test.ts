import { createServer, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AbortError, ImageError, InvalidInputError, TimeoutError } from "../../src/errors.js";
import { loadPictures } from "../../src/images/load-pictures.js";
import { image, user } from "../../src/messages.js";
import { prepareGeneration } from "../../src/prepare-generation.js";

// A call's `timeoutMs` and `signal` bound its pictures, whatever their own limits (fetchTimeoutMs stays 30 s here).

const png = await sharp({ create: { width: 6, height: 5, channels: 3, background: { r: 1, g: 2, b: 3 } } })
  .png()
  .toBuffer();
let server: Server;
let base: string;
const sockets = new Set<Socket>();

beforeAll(async () => {
  server = createServer((request, response) => {
    if (request.url === "/picture.png") response.writeHead(200, { "content-type": "image/png" }).end(png);
    else if (request.url === "/missing.png") response.writeHead(404).end();
    // Anything else: accepted and never answered.
  });
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

async function settle(promise: Promise<unknown>): Promise<{ error: unknown; ms: number }> {
  const started = performance.now();
  const error = await promise.then(
    () => new Error("expected a failure"),
    (caught: unknown) => caught,
  );
  return { error, ms: performance.now() - started };
}

async function noSocketsWithin(ms: number): Promise<void> {
  const started = performance.now();
  while (sockets.size > 0 && performance.now() - started < ms) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(sockets.size, "every download's socket is closed").toBe(0);
}

describe("loadPictures", () => {
  it("loads every picture, in order", async () => {
    const pictures = await loadPictures([`${base}/picture.png`, png], {}, { timeoutMs: 5000 });
    expect(pictures.map((picture) => [picture.width, picture.height])).toEqual([
      [6, 5],
      [6, 5],
    ]);
  });

  it("rejects with TimeoutError after the call's timeoutMs, not the download's, and closes the downloads", async () => {
    const { error, ms } = await settle(
      loadPictures([`${base}/never-1`, `${base}/never-2`], { fetchTimeoutMs: 30_000 }, { timeoutMs: 400 }),
    );
    expect(error).toBeInstanceOf(TimeoutError);
    expect(error).toMatchObject({ code: "TIMED_OUT", message: "The generate call timed out after 400 ms while loading its pictures" });
    expect(ms).toBeGreaterThanOrEqual(390);
    expect(ms).toBeLessThan(1500);
    await noSocketsWithin(1000);
  });

  it("rejects with AbortError at once when the signal fires mid-download, with the signal's reason", async () => {
    const controller = new AbortController();
    const pending = loadPictures([`${base}/never`], {}, { signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(sockets.size).toBe(1);
    const reason = new Error("user left");
    controller.abort(reason);
    const { error, ms } = await settle(pending);
    expect(error).toBeInstanceOf(AbortError);
    expect((error as AbortError).cause).toBe(reason);
    expect(ms).toBeLessThan(200);
    await noSocketsWithin(1000);
  });

  it("rejects at once for a signal that already fired, without a request", async () => {
    const { error } = await settle(loadPictures([`${base}/never`], {}, { signal: AbortSignal.abort("gone") }));
    expect(error).toMatchObject({ code: "ABORTED", cause: "gone" });
    expect(sockets.size).toBe(0);
  });

  it("cancels the other downloads when one picture fails", async () => {
    const { error, ms } = await settle(loadPictures([`${base}/never`, `${base}/missing.png`], {}));
    expect(error).toBeInstanceOf(ImageError);
    expect(ms).toBeLessThan(1000);
    await noSocketsWithin(1000);
  });

  it("never fires a timeout beyond what Node's timers hold", async () => {
    const pictures = await loadPictures([`${base}/picture.png`], {}, { timeoutMs: 2 ** 31 });
    expect(pictures).toHaveLength(1);
  });
});

describe("prepareGeneration", () => {
  it("gives the call's timeoutMs to its pictures", async () => {
    const { error, ms } = await settle(
      prepareGeneration([user(image(`${base}/never`), "Colour?")], { timeoutMs: 300 }, {}, { stream: false }),
    );
    expect(error).toBeInstanceOf(TimeoutError);
    expect(ms).toBeLessThan(1500);
  });

  it("refuses a signal that is not an AbortSignal, with a typed error", async () => {
    const { error } = await settle(
      prepareGeneration([user(image(png), "Colour?")], { signal: { aborted: false } as never }, {}, { stream: false }),
    );
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error).toMatchObject({ code: "INVALID_OPTIONS", message: expect.stringContaining("`signal` option to be an AbortSignal") });
  });
});

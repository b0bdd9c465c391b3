import { getEventListeners } from "node:events";
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AbortError, ImageError } from "../../src/errors.js";
import { fetchImage } from "../../src/images/fetch-image.js";
import { loadImage } from "../../src/images/load-image.js";
import { noiseRgba } from "./sharp-fixtures.js";

const png = await sharp(noiseRgba(), { raw: { width: 41, height: 29, channels: 4 } })
  .png()
  .toBuffer();

// Routes of a local server; each tells the client something different about its request.
const routes: Record<string, (response: ServerResponse, path: string) => void> = {
  "/picture.png": (response) => response.writeHead(200, { "content-type": "image/png" }).end(png),
  "/missing.png": (response) => response.writeHead(404).end("not here"),
  "/error.png": (response) => response.writeHead(500).end(),
  "/never": () => {},
  "/headers-then-nothing": (response) => response.writeHead(200).write(png.subarray(0, 100)),
  "/forever": (response) => {
    response.writeHead(200, { "content-type": "image/png" });
    const chunk = Buffer.alloc(64 * 1024);
    const pump = (): void => {
      while (response.write(chunk));
      response.once("drain", pump);
    };
    pump();
  },
  "/declares-too-much": (response) => response.writeHead(200, { "content-length": String(1 << 30) }).write(png),
  "/loop": (response) => response.writeHead(302, { location: "/loop" }).end(),
  "/to-file": (response) => response.writeHead(302, { location: "file:///etc/passwd" }).end(),
  "/to-ftp": (response) => response.writeHead(301, { location: "ftp://127.0.0.1/picture.png" }).end(),
  "/no-location": (response) => response.writeHead(302).end(),
};

let server: Server;
let base: string;
const served: string[] = [];

beforeAll(async () => {
  server = createServer((request, response) => {
    const path = new URL(request.url ?? "/", "http://127.0.0.1").pathname;
    served.push(path);
    const hops = /^\/hops\/(\d+)$/.exec(path);
    if (hops) {
      const left = Number(hops[1]);
      response.writeHead(307, { location: left > 1 ? `/hops/${left - 1}` : "/picture.png" }).end();
      return;
    }
    (routes[path] ?? routes["/missing.png"]!)(response, path);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

// Runs `promise`, expecting an ImageError, and returns what the caller sees of it plus how long it took.
async function failure(promise: Promise<unknown>): Promise<{ code: string; message: string; ms: number }> {
  const started = performance.now();
  const error = await promise.then(
    () => {
      throw new Error("expected a failure");
    },
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(ImageError);
  const { code, message } = error as ImageError;
  return { code, message, ms: performance.now() - started };
}

describe("fetchImage", () => {
  it("downloads the bytes of a 200 response", async () => {
    expect((await fetchImage(`${base}/picture.png`)).equals(png)).toBe(true);
  });

  it("gives loadImage the same pixels from a URL, string or object, as from the bytes", async () => {
    const fromBytes = await loadImage(png);
    for (const url of [`${base}/picture.png`, new URL("/picture.png", base)]) {
      const fromUrl = await loadImage(url);
      expect(fromUrl.data.equals(fromBytes.data)).toBe(true);
      expect(fromUrl.source).toBe(`${base}/picture.png`);
    }
  });

  it("fails with the status on a 404 or a 500", async () => {
    expect(await failure(fetchImage(`${base}/missing.png`))).toMatchObject({
      code: "IMAGE_FETCH_FAILED",
      message: expect.stringContaining("HTTP 404"),
    });
    expect(await failure(loadImage(`${base}/error.png`))).toMatchObject({
      code: "IMAGE_FETCH_FAILED",
      message: expect.stringContaining("HTTP 500"),
    });
  });

  it("gives up after the timeout when the server never answers", async () => {
    const result = await failure(fetchImage(`${base}/never`, { timeoutMs: 200 }));
    expect(result).toMatchObject({ code: "IMAGE_FETCH_FAILED", message: expect.stringContaining("timed out after 200 ms") });
    expect(result.ms).toBeLessThan(2000);
  });

  it("gives up after the timeout when the body stalls, and loadImage passes fetchTimeoutMs on", async () => {
    const result = await failure(loadImage(`${base}/headers-then-nothing`, { fetchTimeoutMs: 200 }));
    expect(result).toMatchObject({ code: "IMAGE_FETCH_FAILED", message: expect.stringContaining("timed out after 200 ms") });
    expect(result.ms).toBeLessThan(2000);
  });

  it("cuts off an endless body at the byte cap, quickly", async () => {
    const result = await failure(fetchImage(`${base}/forever`, { maxBytes: 1024 * 1024 }));
    expect(result).toMatchObject({
      code: "IMAGE_TOO_LARGE",
      message: expect.stringContaining("more than the `maxBytes` limit of 1048576"),
    });
    expect(result.ms).toBeLessThan(2000);
  });

  it("refuses a body whose Content-Length is over the cap before reading it", async () => {
    expect(await failure(loadImage(`${base}/declares-too-much`))).toMatchObject({
      code: "IMAGE_TOO_LARGE",
      message: expect.stringContaining(`declares ${1 << 30} bytes`),
    });
  });

  it("follows up to maxRedirects redirects and no more", async () => {
    expect((await fetchImage(`${base}/hops/5`)).equals(png)).toBe(true);
    expect(await failure(fetchImage(`${base}/hops/6`))).toMatchObject({
      code: "IMAGE_FETCH_FAILED",
      message: expect.stringContaining("more than 5 redirects"),
    });
    expect(await failure(loadImage(`${base}/hops/1`, { maxRedirects: 0 }))).toMatchObject({
      code: "IMAGE_FETCH_FAILED",
      message: expect.stringContaining("more than 0 redirects"),
    });
  });

  it("stops a redirect loop after maxRedirects + 1 requests", async () => {
    served.length = 0;
    expect(await failure(fetchImage(`${base}/loop`, { maxRedirects: 3 }))).toMatchObject({ code: "IMAGE_FETCH_FAILED" });
    expect(served).toEqual(["/loop", "/loop", "/loop", "/loop"]);
  });

  it("refuses a redirect to file: or ftp:, naming the scheme", async () => {
    expect(await failure(fetchImage(`${base}/to-file`))).toMatchObject({
      code: "IMAGE_FETCH_FAILED",
      message: expect.stringMatching(/not `file:`.*$/),
    });
    expect(await failure(fetchImage(`${base}/to-ftp`))).toMatchObject({
      code: "IMAGE_FETCH_FAILED",
      message: expect.stringContaining("not `ftp:`"),
    });
    expect(await failure(fetchImage(`${base}/no-location`))).toMatchObject({
      code: "IMAGE_FETCH_FAILED",
      message: expect.stringContaining("without a Location"),
    });
  });

  it("refuses URLs that are not http or https before any request", async () => {
    served.length = 0;
    expect(await failure(fetchImage("ftp://127.0.0.1/picture.png"))).toMatchObject({
      code: "IMAGE_FETCH_FAILED",
      message: expect.stringContaining("not `ftp:`"),
    });
    expect(await failure(loadImage("gopher://127.0.0.1/picture.png"))).toMatchObject({
      code: "IMAGE_FETCH_FAILED",
      message: expect.stringContaining("not `gopher:`"),
    });
    expect(await failure(fetchImage("not a url"))).toMatchObject({
      code: "IMAGE_FETCH_FAILED",
      message: expect.stringContaining("not a valid URL"),
    });
    expect(served).toEqual([]);
  });

  it("rejects with AbortError carrying the reason when the signal fires mid-request, and removes its listener", async () => {
    const controller = new AbortController();
    const reason = new Error("user left");
    const pending = fetchImage(`${base}/never`, {}, controller.signal);
    setTimeout(() => controller.abort(reason), 50);
    const error = await pending.catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(AbortError);
    expect((error as AbortError).cause).toBe(reason);
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
  });

  it("rejects at once with AbortError for a signal that already fired, without a request", async () => {
    served.length = 0;
    const error = await loadImage(`${base}/picture.png`, {}, AbortSignal.abort("gone")).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ name: "AbortError", code: "ABORTED", cause: "gone" });
    expect(served).toEqual([]);
  });

  it("leaves no listener on the caller's signal after success or failure", async () => {
    const controller = new AbortController();
    await fetchImage(`${base}/picture.png`, {}, controller.signal);
    await fetchImage(`${base}/missing.png`, {}, controller.signal).catch(() => undefined);
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
  });

  it("names the option and the value when an option is invalid", async () => {
    const error = await fetchImage(`${base}/picture.png`, { timeoutMs: -5 }).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: "INVALID_OPTIONS", message: expect.stringMatching(/`timeoutMs`.*got `-5` \(number\)/) });
  });
});

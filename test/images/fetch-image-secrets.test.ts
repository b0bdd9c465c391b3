import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { inspect } from "node:util";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImageError } from "../../src/errors.js";
import { fetchImage } from "../../src/images/fetch-image.js";
import { loadImage } from "../../src/images/load-image.js";

// Credentials and query values in a URL never reach an error, however the fetch fails, before or after a redirect.

const SECRETS = ["hunter2-password", "tok-3f9a8b7c", "sig-00ddba11", "second-user-pw", "frag-secret", "bare-7e57ab1e"];

const png = await sharp({ create: { width: 5, height: 4, channels: 3, background: { r: 200, g: 10, b: 10 } } })
  .png()
  .toBuffer();
let server: Server;
let host: string;
let closedPort: number;

const routes: Record<string, (request: IncomingMessage, response: ServerResponse) => void> = {
  "/never": () => {},
  "/declares-too-much": (_request, response) => response.writeHead(200, { "content-length": String(1 << 30) }).write(png),
  "/endless": (_request, response) => {
    response.writeHead(200);
    const pump = (): void => {
      while (!response.destroyed && response.write(Buffer.alloc(64 * 1024)));
      if (!response.destroyed) response.once("drain", pump);
    };
    pump();
  },
  "/html": (_request, response) => response.writeHead(200, { "content-type": "text/html" }).end("<html>no picture</html>"),
  "/to-missing": (_request, response) =>
    response.writeHead(302, { location: `http://second:second-user-pw@${host}/missing.png?sig=sig-00ddba11#frag-secret` }).end(),
  "/to-ftp": (_request, response) =>
    response.writeHead(301, { location: "ftp://user:hunter2-password@files.example/x?token=tok-3f9a8b7c" }).end(),
  "/to-file": (_request, response) => response.writeHead(302, { location: "file:///etc/passwd?token=tok-3f9a8b7c" }).end(),
  "/loop": (request, response) => response.writeHead(302, { location: request.url ?? "/loop" }).end(),
  "/no-location": (_request, response) => response.writeHead(302).end(),
  "/needs-auth.png": (request, response) => {
    const expected = `Basic ${Buffer.from("user:hunter2-password").toString("base64")}`;
    if (request.headers.authorization === expected) response.writeHead(200, { "content-type": "image/png" }).end(png);
    else response.writeHead(401).end();
  },
};

beforeAll(async () => {
  server = createServer((request, response) => {
    const path = new URL(request.url ?? "/", "http://x").pathname;
    (routes[path] ?? ((_q, r) => r.writeHead(404).end("not here")))(request, response);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
  closedPort = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

// A URL on the test server carrying every kind of secret: user and password, query values, a bare query part, a fragment.
const secretUrl = (path: string, at = host) =>
  `http://user:hunter2-password@${at}${path}?token=tok-3f9a8b7c&sig=sig-00ddba11&bare-7e57ab1e#frag-secret`;

async function secretFreeError(promise: Promise<unknown>, code: string, message: RegExp): Promise<ImageError> {
  const error = await promise.then(
    () => {
      throw new Error("expected a failure");
    },
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(ImageError);
  const { code: actual, message: text, fix } = error as ImageError;
  expect({ code: actual, message: text }).toMatchObject({ code, message: expect.stringMatching(message) });
  for (const view of [text, fix ?? "", String(error), JSON.stringify(error), inspect(error, { depth: 8 })]) {
    for (const secret of SECRETS) expect(view, `${secret} in ${view}`).not.toContain(secret);
  }
  return error as ImageError;
}

describe("no secret from a URL reaches an error", () => {
  it("an HTTP 404, keeping the query keys", async () => {
    const error = await secretFreeError(fetchImage(secretUrl("/missing.png")), "IMAGE_FETCH_FAILED", /HTTP 404/);
    expect(error.message).toBe(`Could not fetch http://***:***@${host}/missing.png?token=***&sig=***&***#***: HTTP 404 Not Found`);
  });

  it("a timeout", async () => {
    await secretFreeError(fetchImage(secretUrl("/never"), { timeoutMs: 200 }), "IMAGE_FETCH_FAILED", /timed out after 200 ms$/);
  });

  it("a body over maxBytes, declared or sent", async () => {
    await secretFreeError(fetchImage(secretUrl("/declares-too-much")), "IMAGE_TOO_LARGE", /declares 1073741824 bytes/);
    await secretFreeError(fetchImage(secretUrl("/endless"), { maxBytes: 256 * 1024 }), "IMAGE_TOO_LARGE", /sent more than 262144 bytes/);
  });

  it("a page that is not an image, through loadImage's decoder", async () => {
    await secretFreeError(
      loadImage(secretUrl("/html")),
      "IMAGE_UNREADABLE",
      /^Cannot read http:\/\/\*\*\*:\*\*\*@.*token=\*\*\*.*not an image format/,
    );
  });

  it("a refused scheme, a malformed URL, a refused connection", async () => {
    await secretFreeError(
      fetchImage("ftp://user:hunter2-password@files.example/x.png?token=tok-3f9a8b7c"),
      "IMAGE_FETCH_FAILED",
      /not `ftp:`$/,
    );
    await secretFreeError(
      loadImage("gopher://user:hunter2-password@files.example/?token=tok-3f9a8b7c"),
      "IMAGE_FETCH_FAILED",
      /not `gopher:`$/,
    );
    await secretFreeError(fetchImage("http://user:hunter2-password@[bad/x?token=tok-3f9a8b7c"), "IMAGE_FETCH_FAILED", /not a valid URL$/);
    await secretFreeError(loadImage("http://user:hunter2-password@[bad/x?token=tok-3f9a8b7c"), "IMAGE_FETCH_FAILED", /not a valid URL$/);
    await secretFreeError(fetchImage(secretUrl("/x.png", `127.0.0.1:${closedPort}`)), "IMAGE_FETCH_FAILED", /ECONNREFUSED/);
  });

  it("a file: URL with a host, with and without credentials", async () => {
    await secretFreeError(
      loadImage("file://server/share/x.png?token=tok-3f9a8b7c"),
      "IMAGE_UNREADABLE",
      /^Cannot read file:\/\/server\/share\/x\.png\?token=\*\*\*: /,
    );
    await secretFreeError(
      loadImage("file://user:hunter2-password@server/x.png?token=tok-3f9a8b7c"),
      "IMAGE_FETCH_FAILED",
      /not a valid URL$/,
    );
  });

  it("a private target refused by blockPrivateNetwork", async () => {
    await secretFreeError(fetchImage(secretUrl("/x.png"), { blockPrivateNetwork: true }), "IMAGE_URL_REFUSED", /loopback/);
  });
});

describe("no secret from a redirect, its source or its target, reaches an error", () => {
  it("a redirect to a 404 whose Location carries other credentials and a signature", async () => {
    const error = await secretFreeError(fetchImage(secretUrl("/to-missing")), "IMAGE_FETCH_FAILED", /HTTP 404/);
    expect(error.message).toBe(`Could not fetch http://***:***@${host}/missing.png?sig=***#***: HTTP 404 Not Found`);
  });

  it("a redirect to ftp: and to file:", async () => {
    const ftp = await secretFreeError(fetchImage(secretUrl("/to-ftp")), "IMAGE_FETCH_FAILED", /not `ftp:`$/);
    expect(ftp.message).toMatch(
      /^Could not fetch ftp:\/\/\*\*\*:\*\*\*@files\.example\/x\?token=\*\*\* \(redirected from http:\/\/\*\*\*:\*\*\*@/,
    );
    await secretFreeError(fetchImage(secretUrl("/to-file")), "IMAGE_FETCH_FAILED", /not `file:`$/);
  });

  it("too many redirects, and a redirect without a Location", async () => {
    await secretFreeError(fetchImage(secretUrl("/loop"), { maxRedirects: 2 }), "IMAGE_FETCH_FAILED", /more than 2 redirects/);
    await secretFreeError(fetchImage(secretUrl("/no-location")), "IMAGE_FETCH_FAILED", /without a Location header$/);
  });
});

it("still sends the credentials a URL carries, as basic auth", async () => {
  expect((await fetchImage(`http://user:hunter2-password@${host}/needs-auth.png`)).equals(png)).toBe(true);
});

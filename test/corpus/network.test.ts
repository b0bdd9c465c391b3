import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { join } from "node:path";
import { inspect } from "node:util";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AbortError, ImageError, TimeoutError } from "../../src/errors.js";
import { image, user } from "../../src/messages.js";
import { Idefics2 } from "../../src/model.js";
import { prepareGeneration } from "../../src/prepare-generation.js";
import { demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { repoRoot } from "../helpers/reference.js";
import { colourQuestion, expectRefusal, expectServes } from "./corpus-helpers.js";

// Issue 12, findings 2, 3 and 6 on the real worker and the embedded model: no secret from a URL in any error or
// CLI line, `blockPrivateNetwork` refusing every spelling of the local network, and a call's `timeoutMs` and
// `signal` covering its picture downloads. Only 127.0.0.1 is contacted; other private addresses are refused
// from their spelling, before any connection.

const SECRETS = ["hunter2-password", "tok-3f9a8b7c", "sig-00ddba11"];
// Longer than every bound asserted below: the call's own timeout or abort must end it, not the download's.
const FETCH_TIMEOUT_MS = 30_000;

let model: Idefics2;
let guarded: Idefics2;
let server: Server;
let host: string;
const sockets = new Set<Socket>();
const served: string[] = [];

const routes: Record<string, (request: IncomingMessage, response: ServerResponse, picture: Buffer) => void> = {
  "/second.jpg": (_request, response, picture) => response.writeHead(200, { "content-type": "image/jpeg" }).end(picture),
  "/hang": () => {}, // accepts the request and never answers
  "/html": (_request, response) => response.writeHead(200, { "content-type": "text/html" }).end("<html>no picture</html>"),
  "/to": (request, response) => {
    const to = new URL(request.url ?? "/", "http://x").searchParams.get("url") ?? "/";
    response.writeHead(302, { location: to }).end();
  },
};

beforeAll(async () => {
  const picture = await readFile(demoSecond);
  server = createServer((request, response) => {
    const path = new URL(request.url ?? "/", "http://x").pathname;
    served.push(path);
    (routes[path] ?? ((_q, r) => r.writeHead(404).end("not here")))(request, response, picture);
  });
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  [model, guarded] = await Promise.all([
    Idefics2.load({ python: testPython(), images: { fetchTimeoutMs: FETCH_TIMEOUT_MS } }),
    Idefics2.load({ python: testPython(), images: { blockPrivateNetwork: true, fetchTimeoutMs: 2000 } }),
  ]);
});

afterAll(async () => {
  await Promise.all([model?.close(), guarded?.close()]);
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
});

const ask =
  (target: Idefics2, source: string, options = {}) =>
  () =>
    target.generate([user(image(source), colourQuestion)], { maxNewTokens: 8, ...options });
const secretUrl = (path: string) => `http://user:hunter2-password@${host}${path}?token=tok-3f9a8b7c&sig=sig-00ddba11`;

function expectNoSecret(error: unknown): void {
  const { message, fix } = error as ImageError;
  for (const view of [message, fix ?? "", String(error), JSON.stringify(error), inspect(error, { depth: 8 })]) {
    for (const secret of SECRETS) expect(view, `${secret} leaked`).not.toContain(secret);
  }
}

async function waitForNoSockets(withinMs: number): Promise<void> {
  const started = performance.now();
  while (sockets.size > 0 && performance.now() - started < withinMs) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(sockets.size, "the download's socket was closed").toBe(0);
}

describe("finding 2: secrets in URLs are redacted in every error", () => {
  it.each([
    [
      "an HTTP 404",
      "/missing.png",
      "IMAGE_FETCH_FAILED",
      /^Could not fetch http:\/\/\*\*\*:\*\*\*@127\.0\.0\.1:\d+\/missing\.png\?token=\*\*\*&sig=\*\*\*: HTTP 404/,
    ],
    [
      "a page that is not a picture",
      "/html",
      "IMAGE_UNREADABLE",
      /^Cannot read http:\/\/\*\*\*:\*\*\*@.*\/html\?token=\*\*\*&sig=\*\*\*: not an image/,
    ],
  ])("%s", async (_what, path, code, message) => {
    expectNoSecret(await expectRefusal(ask(model, secretUrl(path)), ImageError, code, message));
  });

  it("a redirect whose target carries other secrets", async () => {
    const target = `http://other:hunter2-password@${host}/gone.png?sig=sig-00ddba11`;
    const error = await expectRefusal(
      ask(model, `${secretUrl("/to")}&url=${encodeURIComponent(target)}`),
      ImageError,
      "IMAGE_FETCH_FAILED",
      /^Could not fetch http:\/\/\*\*\*:\*\*\*@127\.0\.0\.1:\d+\/gone\.png\?sig=\*\*\*: HTTP 404/,
    );
    expectNoSecret(error);
  });

  it("the CLI's error line", async () => {
    const result = await execa(
      process.execPath,
      [join(repoRoot, "dist", "cli", "main.js"), "generate", "--prompt", "Colour?", "--image", secretUrl("/missing.png")],
      { reject: false, env: { IDEFICS2_PYTHON: testPython() }, timeout: 60_000 },
    );
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(/^idefics2: error \[IMAGE_FETCH_FAILED\]: Could not fetch http:\/\/\*\*\*:\*\*\*@/m);
    for (const secret of SECRETS) expect(`${result.stdout}${result.stderr}`).not.toContain(secret);
  });
});

describe("finding 3: blockPrivateNetwork refuses the local network", () => {
  const loopback = (port: string) => [
    `http://127.0.0.1:${port}/second.jpg`,
    `http://localhost:${port}/second.jpg`,
    `http://2130706433:${port}/second.jpg`,
    `http://0x7f000001:${port}/second.jpg`,
    `http://0177.0.0.1:${port}/second.jpg`,
    `http://127.1:${port}/second.jpg`,
    `http://0.0.0.0:${port}/second.jpg`,
    `http://[::ffff:127.0.0.1]:${port}/second.jpg`,
  ];
  const elsewhere = [
    "http://10.0.0.1/a.jpg",
    "http://172.16.0.1/a.jpg",
    "http://192.168.1.1/a.jpg",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/a.jpg",
    "http://[::1]/a.jpg",
    "http://[fe80::1]/a.jpg",
    "http://[fd00::1]/a.jpg",
    "http://[::ffff:a9fe:a9fe]/a.jpg",
  ];

  it("refuses every spelling of this machine and of private networks, at once and without a request", async () => {
    served.length = 0;
    const port = host.split(":")[1] ?? "";
    for (const url of [...loopback(port), ...elsewhere]) {
      const error = await expectRefusal(ask(guarded, url), ImageError, "IMAGE_URL_REFUSED", /^Refused to fetch \S+: /, 500);
      expect(error.fix).toMatch(/`blockPrivateNetwork`/);
    }
    expect(served).toEqual([]);
    await expectServes(guarded);
  });

  it("without the option, the same loopback spellings are fetched", async () => {
    const port = host.split(":")[1] ?? "";
    for (const url of loopback(port)) {
      const prepared = await prepareGeneration([user(image(url), colourQuestion)], {}, { blockPrivateNetwork: false }, { stream: false });
      expect(prepared.params.images, url).toHaveLength(1);
    }
  });
});

describe("finding 6: a call's timeoutMs and signal cover its picture downloads", () => {
  it("timeoutMs: 1000 rejects with TimeoutError in about a second, not after fetchTimeoutMs, and closes the download", async () => {
    const started = performance.now();
    const error = await expectRefusal(
      ask(model, `http://${host}/hang`, { timeoutMs: 1000 }),
      TimeoutError,
      "TIMED_OUT",
      /timed out after 1000 ms/,
      2500,
    );
    expect(performance.now() - started).toBeGreaterThanOrEqual(950);
    expect(error.fix).toMatch(/timeoutMs/);
    await waitForNoSockets(1000);
  });

  it("the same for a stream", async () => {
    const stream = model.stream([user(image(`http://${host}/hang`), colourQuestion)], { timeoutMs: 800 });
    await expectRefusal(() => stream.result, TimeoutError, "TIMED_OUT", /timed out after 800 ms/, 2500);
    await waitForNoSockets(1000);
  });

  it("an abort rejects at once while the download is in flight, and closes it", async () => {
    const controller = new AbortController();
    const pending = ask(model, `http://${host}/hang`, { signal: controller.signal })();
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(sockets.size).toBe(1);
    const reason = new Error("user left");
    await expectRefusal(
      () => {
        controller.abort(reason);
        return pending;
      },
      AbortError,
      "ABORTED",
      /aborted/,
      300,
    );
    await waitForNoSockets(1000);
  });

  it("an abort rejects at once for a call whose download waits beside another call's stalled one", async () => {
    const first = new AbortController();
    const second = new AbortController();
    const stalled = ask(model, `http://${host}/hang`, { signal: first.signal })();
    const behind = ask(model, `http://${host}/hang`, { signal: second.signal })();
    stalled.catch(() => {});
    await new Promise((resolve) => setTimeout(resolve, 300));
    await expectRefusal(
      () => {
        second.abort();
        return behind;
      },
      AbortError,
      "ABORTED",
      /aborted/,
      300,
    );
    first.abort();
    await expect(stalled).rejects.toBeInstanceOf(AbortError);
    await waitForNoSockets(1000);
    await expectServes(model);
  });

  it("a call whose pictures are ready, queued behind a call whose download stalls, aborts and times out on time", async () => {
    const first = new AbortController();
    const stalled = ask(model, `http://${host}/hang`, { signal: first.signal })();
    stalled.catch(() => {});
    const second = new AbortController();
    const behind = ask(model, demoSecond, { signal: second.signal })();
    await new Promise((resolve) => setTimeout(resolve, 300));
    await expectRefusal(
      () => {
        second.abort();
        return behind;
      },
      AbortError,
      "ABORTED",
      /aborted/,
      300,
    );
    const started = performance.now();
    await expectRefusal(ask(model, demoSecond, { timeoutMs: 1000 }), TimeoutError, "TIMED_OUT", /timed out after 1000 ms/, 2500);
    expect(performance.now() - started).toBeGreaterThanOrEqual(950);
    first.abort();
    await expect(stalled).rejects.toBeInstanceOf(AbortError);
    await waitForNoSockets(1000);
    await expectServes(model);
  });

  it("a failing picture cancels the call's other downloads", async () => {
    const started = performance.now();
    await expectRefusal(
      () => model.generate([user(image(`http://${host}/hang`), image(`http://${host}/missing.png`), colourQuestion)], { maxNewTokens: 8 }),
      ImageError,
      "IMAGE_FETCH_FAILED",
      /HTTP 404/,
      1500,
    );
    expect(performance.now() - started).toBeLessThan(1500);
    await waitForNoSockets(1000);
    await expectServes(model);
  });
});

import type { LookupAddress } from "node:dns";
import { createServer, type Server } from "node:http";
import net, { type AddressInfo } from "node:net";
import sharp from "sharp";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { ImageError } from "../../src/errors.js";
import { fetchImage } from "../../src/images/fetch-image.js";
import { loadImage } from "../../src/images/load-image.js";

// `blockPrivateNetwork` on real fetches. Only loopback is ever contacted. Two stand-ins make that possible:
// 127.0.0.2 plays a public origin (the classifier is told so, and nothing else changes), and names under `.test`
// resolve to the addresses below (a made-up resolver in front of the system one). Every private address outside
// loopback is only ever refused before a connection, which the spy on Socket#connect proves.

const PUBLIC_STAND_IN = "127.0.0.2";
const NAMES: Record<string, string[]> = {
  "loopback.test": ["127.0.0.1"],
  "mapped.test": ["::ffff:127.0.0.1"],
  "metadata.test": ["169.254.169.254"],
  "mixed.test": ["93.184.216.34", "127.0.0.1"],
};

vi.mock("../../src/images/private-address.js", async (importOriginal) => {
  const real = await importOriginal<typeof import("../../src/images/private-address.js")>();
  return { privateAddressReason: (address: string) => (address === PUBLIC_STAND_IN ? undefined : real.privateAddressReason(address)) };
});

vi.mock("node:dns", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:dns")>();
  const lookup = (hostname: string, options: object, callback: (error: Error | null, addresses: LookupAddress[]) => void) => {
    const made = NAMES[hostname];
    if (!made) return real.lookup(hostname, { ...options, all: true }, callback);
    callback(
      null,
      made.map((address) => ({ address, family: address.includes(":") ? 6 : 4 })),
    );
  };
  return { ...real, default: { ...real, lookup }, lookup };
});

const png = await sharp({ create: { width: 9, height: 7, channels: 3, background: { r: 10, g: 20, b: 30 } } })
  .png()
  .toBuffer();

let target: Server;
let target6: Server;
let origin: Server;
let port: number;
let port6: number;
let originBase: string;
const served: string[] = [];

async function listen(server: Server, host: string): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return (server.address() as AddressInfo).port;
}

beforeAll(async () => {
  // The loopback service a redirect must not reach: it records every request.
  const picture = (request: import("node:http").IncomingMessage, response: import("node:http").ServerResponse) => {
    served.push(request.url ?? "");
    response.writeHead(200, { "content-type": "image/png" }).end(png);
  };
  target = createServer(picture);
  target6 = createServer(picture);
  port = await listen(target, "127.0.0.1");
  port6 = await listen(target6, "::1");
  // The "public" origin: /to?url=… redirects there.
  origin = createServer((request, response) => {
    const to = new URL(request.url ?? "/", "http://x").searchParams.get("url");
    if (to) response.writeHead(302, { location: to }).end();
    else response.writeHead(200, { "content-type": "image/png" }).end(png);
  });
  originBase = `http://${PUBLIC_STAND_IN}:${await listen(origin, PUBLIC_STAND_IN)}`;
});

afterAll(async () => {
  for (const server of [target, target6, origin]) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

afterEach(() => {
  vi.restoreAllMocks();
});

// Spellings of this machine's loopback, each reaching `target` (or `target6`, on ::1) when nothing refuses them;
// PORT and PORT6 stand for their ports, known only once they listen.
const LOOPBACK_SPELLINGS = [
  "http://127.0.0.1:PORT/a.png",
  "http://2130706433:PORT/decimal.png",
  "http://0x7f000001:PORT/hex.png",
  "http://0177.0.0.1:PORT/octal.png",
  "http://127.1:PORT/short.png",
  "http://0x7f.1:PORT/hex-short.png",
  "http://localhost:PORT/name.png",
  "http://LocalHost:PORT/name-case.png",
  "http://0.0.0.0:PORT/unspecified.png",
  "http://0:PORT/zero.png",
  "http://[::ffff:127.0.0.1]:PORT/mapped.png",
  "http://[::ffff:7f00:1]:PORT/mapped-hex.png",
  "http://[::1]:PORT6/v6.png",
  "http://[0:0:0:0:0:0:0:1]:PORT6/v6-long.png",
  "http://[::]:PORT6/v6-unspecified.png",
];
const withPorts = (spelling: string): string => spelling.replace("PORT6", String(port6)).replace("PORT", String(port));

// Never contacted in any test: each is refused from its spelling before a socket exists.
const PRIVATE_SPELLINGS = [
  "http://10.0.0.1/a.png",
  "http://167772161/decimal-10.png",
  "http://0xa000001/hex-10.png",
  "http://172.16.0.1/a.png",
  "http://172.31.255.254/a.png",
  "http://192.168.0.1/a.png",
  "http://0300.0250.0.1/octal-192-168.png",
  "http://3232235521/decimal-192-168.png",
  "http://169.254.169.254/latest/meta-data/",
  "http://0xA9FEA9FE/hex-metadata",
  "http://100.64.0.1/cgnat.png",
  "http://224.0.0.1/multicast.png",
  "http://255.255.255.255/broadcast.png",
  "https://127.0.0.1/tls.png",
  "https://[::1]/tls.png",
  "http://[fe80::1]/link-local.png",
  "http://[fd00:ec2::254]/unique-local.png",
  "http://[fc00::1]/unique-local.png",
  "http://[::ffff:169.254.169.254]/mapped-metadata",
  "http://[::ffff:10.0.0.1]/mapped-10.png",
  "http://[64:ff9b::a9fe:a9fe]/nat64-metadata",
  "http://[2002:a9fe:a9fe::]/6to4-metadata",
  "http://app.localhost/sub.png",
  "http://localhost./trailing-dot.png",
];

async function refusal(url: string, options: Parameters<typeof fetchImage>[1] = { blockPrivateNetwork: true }): Promise<ImageError> {
  const error = await fetchImage(url, options).then(
    () => {
      throw new Error(`${url} was fetched`);
    },
    (caught: unknown) => caught,
  );
  expect(error, url).toBeInstanceOf(ImageError);
  return error as ImageError;
}

describe("blockPrivateNetwork: true refuses before connecting", () => {
  it.each([...LOOPBACK_SPELLINGS, ...PRIVATE_SPELLINGS].map((url) => [url]))("refuses %s with no socket opened", async (spelling) => {
    const url = withPorts(spelling);
    const connect = vi.spyOn(net.Socket.prototype, "connect");
    const started = performance.now();
    const error = await refusal(url);
    const elapsed = performance.now() - started;
    expect(error.code).toBe("IMAGE_URL_REFUSED");
    expect(error.message).toMatch(
      /^Refused to fetch \S+: \S+ is an? (loopback|private|link-local|unique-local|unspecified|shared|multicast|reserved|IPv4-mapped|NAT64|6to4)|a loopback name/,
    );
    expect(error.fix).toMatch(/`blockPrivateNetwork`/);
    expect(connect).not.toHaveBeenCalled();
    expect(elapsed, `refused after ${elapsed} ms`).toBeLessThan(50);
  });

  it("names the host as the URL spells it after parsing, and why", async () => {
    expect((await refusal(`http://2130706433:${port}/x.png`)).message).toBe(
      `Refused to fetch http://127.0.0.1:${port}/x.png: 127.0.0.1 is a loopback address (127.0.0.0/8)`,
    );
    expect((await refusal("http://169.254.169.254/latest/meta-data/")).message).toBe(
      "Refused to fetch http://169.254.169.254/latest/meta-data/: 169.254.169.254 is a link-local address (169.254.0.0/16, where cloud metadata services answer)",
    );
    expect((await refusal("http://[::ffff:7f00:1]/x")).message).toMatch(
      /\[::ffff:7f00:1\] is an IPv4-mapped address of 127\.0\.0\.1, a loopback/,
    );
  });

  it("refuses a name that resolves to a private address, at the lookup, before connecting", async () => {
    served.length = 0;
    for (const name of ["loopback.test", "mapped.test", "metadata.test", "mixed.test"]) {
      const error = await refusal(`http://${name}:${port}/resolved.png`);
      expect(error.code).toBe("IMAGE_URL_REFUSED");
      expect(error.message).toMatch(
        new RegExp(`^Refused to fetch http://${name.replace(".", "\\.")}:${port}/resolved\\.png: ${name.replace(".", "\\.")} resolves to `),
      );
    }
    expect(served).toEqual([]);
  });
});

describe("blockPrivateNetwork at every redirect", () => {
  it("fetches from the stand-in public origin itself", async () => {
    expect((await fetchImage(`${originBase}/picture.png`, { blockPrivateNetwork: true })).equals(png)).toBe(true);
  });

  it.each(LOOPBACK_SPELLINGS.map((url) => [url]))(
    "refuses a redirect to %s; without the option the same redirect is followed",
    async (spelling) => {
      const url = withPorts(spelling);
      served.length = 0;
      const start = `${originBase}/to?url=${encodeURIComponent(url)}`;
      const error = await refusal(start);
      expect(error.code).toBe("IMAGE_URL_REFUSED");
      expect(error.message).toMatch(/\(redirected from http:\/\/127\.0\.0\.2:\d+\/to\?url=\*\*\*\): /);
      expect(served).toEqual([]);

      expect((await fetchImage(start, { blockPrivateNetwork: false })).equals(png)).toBe(true);
      expect((await fetchImage(start)).equals(png), "off by default").toBe(true);
      expect(served).toHaveLength(2);
    },
  );

  it("refuses a redirect to a name that resolves to loopback, checked by the lookup of that hop", async () => {
    served.length = 0;
    const error = await refusal(`${originBase}/to?url=${encodeURIComponent(`http://loopback.test:${port}/x.png`)}`);
    expect(error.message).toMatch(/\(redirected from .*\): loopback\.test resolves to 127\.0\.0\.1, a loopback address/);
    expect(served).toEqual([]);
  });

  it("redacts the refused target and its origin", async () => {
    const target = `http://admin:hunter2-password@localhost:${port}/x.png?token=tok-3f9a8b7c`;
    const error = await refusal(`${originBase}/to?url=${encodeURIComponent(target)}&sig=sig-00ddba11`);
    expect(error.message).toBe(
      `Refused to fetch http://***:***@localhost:${port}/x.png?token=*** (redirected from ${originBase}/to?url=***&sig=***): localhost is a loopback name`,
    );
    for (const view of [error.message, String(error), JSON.stringify(error), error.fix ?? ""]) {
      for (const secret of ["hunter2-password", "tok-3f9a8b7c", "sig-00ddba11", "admin"]) expect(view).not.toContain(secret);
    }
  });

  it("passes the option through loadImage", async () => {
    const error = await loadImage(`${originBase}/to?url=${encodeURIComponent(`http://127.1:${port}/x.png`)}`, {
      blockPrivateNetwork: true,
    }).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ name: "ImageError", code: "IMAGE_URL_REFUSED" });
    expect((await loadImage(`http://127.1:${port}/x.png`)).width).toBe(9);
  });

  it("opens a socket when the option is off (the spy's control)", async () => {
    const connect = vi.spyOn(net.Socket.prototype, "connect");
    await fetchImage(`http://127.0.0.1:${port}/control.png`);
    expect(connect).toHaveBeenCalled();
  });
});

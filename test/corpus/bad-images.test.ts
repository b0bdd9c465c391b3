import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImageError } from "../../src/errors.js";
import { image, user } from "../../src/messages.js";
import { Idefics2 } from "../../src/model.js";
import { prepareGeneration } from "../../src/prepare-generation.js";
import { pilReference, type PilResult } from "../images/pil-reference.js";
import { blackPng } from "../images/png-declaring.js";
import { writeSharpFixtures } from "../images/sharp-fixtures.js";
import { demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { closedPort, colourQuestion, endlessBody, expectRefusal, expectServes, localServer, type LocalServer } from "./corpus-helpers.js";

// Hostile and broken pictures, files and URLs against one loaded model: each is refused with the right
// ImageError quickly, and the same model keeps answering. Odd but valid pictures must work, with PIL's pixels.

const FETCH_TIMEOUT_MS = 1000;
// Below the 64 MiB default so an endless body hits the cap well within FETCH_TIMEOUT_MS on a busy 2-core machine.
const MAX_BYTES = 16 * 1024 * 1024;

let model: Idefics2;
let folder: string;
let server: LocalServer;
let reference: Map<string, PilResult>;
const file = (name: string) => join(folder, name);
const ask = (source: string | Buffer) => () => model.generate([user(image(source), colourQuestion)], { maxNewTokens: 8 });

// A blue square on a light background, as the embedded model was trained on, in four formats.
async function encodings(): Promise<Record<"jpg" | "png" | "webp" | "gif", Buffer>> {
  const square = await sharp({ create: { width: 30, height: 30, channels: 3, background: { r: 30, g: 60, b: 220 } } })
    .png()
    .toBuffer();
  const picture = () =>
    sharp({ create: { width: 72, height: 56, channels: 3, background: { r: 235, g: 235, b: 225 } } }).composite([
      { input: square, left: 20, top: 12 },
    ]);
  return {
    jpg: await picture().jpeg({ quality: 90 }).toBuffer(),
    png: await picture().png().toBuffer(),
    webp: await picture().webp({ quality: 90 }).toBuffer(),
    gif: await picture().gif().toBuffer(),
  };
}

// Keeps the format's signature (the first 12 bytes) and replaces the rest with seeded garbage.
function corrupt(bytes: Buffer): Buffer {
  const out = Buffer.from(bytes);
  let state = 99;
  for (let index = 12; index < out.length; index += 1) {
    state = (state * 1103515245 + 12345) & 0x7fffffff;
    out[index] = state >> 16;
  }
  return out;
}

beforeAll(async () => {
  folder = await mkdtemp(join(tmpdir(), "idefics2-corpus-images-"));
  const loading = Idefics2.load({ python: testPython(), images: { fetchTimeoutMs: FETCH_TIMEOUT_MS, maxBytes: MAX_BYTES } });
  const encoded = await encodings();
  for (const [extension, bytes] of Object.entries(encoded)) {
    await writeFile(file(`truncated.${extension}`), bytes.subarray(0, Math.floor(bytes.length * 0.6)));
    await writeFile(file(`corrupt.${extension}`), corrupt(bytes));
  }
  await writeFile(file("zero-bytes.jpg"), "");
  await writeFile(file("notes.jpg"), "Dear diary, this is not a JPEG.\n");
  // 20000×20000 1-bit pixels in ~50 KB: 1.2 GB once decoded to RGB.
  await writeFile(file("bomb.png"), blackPng(20_000, 20_000));
  // A header claiming 8000×8000 followed by only 3 rows of pixels.
  await writeFile(file("header-lies.png"), blackPng(8000, 8000, 3));
  await sharp({ create: { width: 20_000, height: 1, channels: 3, background: { r: 30, g: 60, b: 220 } } })
    .png()
    .toFile(file("20000x1.png"));
  await sharp({ create: { width: 20_000, height: 20, channels: 3, background: { r: 30, g: 60, b: 220 } } })
    .png()
    .toFile(file("20000x20.png"));
  await mkdir(file("a-folder.jpg"));

  // Odd but valid pictures, read by PIL's load_image in a folder of their own.
  const valid = join(folder, "valid");
  await mkdir(valid);
  await writeSharpFixtures(valid);
  const second = await readFile(demoSecond);
  server = await localServer({
    "/second.jpg": (_request, response) => response.writeHead(200, { "content-type": "image/jpeg" }).end(second),
    "/hang": () => {}, // accepts the request and never answers
    "/endless": (_request, response) => endlessBody(response),
    "/declares-1gb": (_request, response) => {
      response.writeHead(200, { "content-type": "image/jpeg", "content-length": String(1024 ** 3) });
      response.write(second.subarray(0, 1000));
    },
    "/to-file": (_request, response) => response.writeHead(302, { location: "file:///etc/passwd" }).end(),
    "/to-ftp": (_request, response) => response.writeHead(301, { location: "ftp://127.0.0.1/secret.jpg" }).end(),
    "/loop": (_request, response) => response.writeHead(302, { location: "/loop" }).end(),
    "/html": (_request, response) =>
      response.writeHead(200, { "content-type": "text/html" }).end("<html><body>Not a picture</body></html>"),
    "/redirect-to-second": (_request, response) => response.writeHead(307, { location: "/second.jpg" }).end(),
  });
  [reference, model] = await Promise.all([pilReference(valid), loading]);
});

afterAll(async () => {
  await model?.close();
  await server?.close();
  await rm(folder, { recursive: true, force: true });
});

describe("broken and hostile image files", () => {
  it.each(["jpg", "png", "webp", "gif"])("refuses a truncated %s, naming the file", async (extension) => {
    const path = file(`truncated.${extension}`);
    await expectRefusal(ask(path), ImageError, "IMAGE_UNREADABLE", new RegExp(`^Cannot (read|decode) ${path.replaceAll(".", "\\.")}`));
  });

  it.each(["jpg", "png", "webp", "gif"])("refuses a corrupt %s (its signature, then garbage), naming the file", async (extension) => {
    const path = file(`corrupt.${extension}`);
    await expectRefusal(ask(path), ImageError, "IMAGE_UNREADABLE", new RegExp(`^Cannot (read|decode) ${path.replaceAll(".", "\\.")}`));
  });

  it("refuses a zero-byte file", async () => {
    await expectRefusal(
      ask(file("zero-bytes.jpg")),
      ImageError,
      "IMAGE_UNREADABLE",
      /zero-bytes\.jpg: not an image format sharp recognises \(Input Buffer is empty\)$/,
    );
  });

  it("refuses a text file named .jpg", async () => {
    await expectRefusal(ask(file("notes.jpg")), ImageError, "IMAGE_UNREADABLE", /notes\.jpg: not an image format sharp recognises/);
  });

  it("refuses a decompression bomb (50 KB, 400 megapixels) from its header, before decoding", async () => {
    await expectRefusal(
      ask(file("bomb.png")),
      ImageError,
      "IMAGE_TOO_LARGE",
      /bomb\.png \(png\) is 20000×20000 = 400000000 pixels, more than the `maxPixels` limit of 100000000$/,
      1500,
    );
  });

  it("refuses a PNG whose header promises more rows than it has", async () => {
    await expectRefusal(ask(file("header-lies.png")), ImageError, "IMAGE_UNREADABLE", /^Cannot decode .*header-lies\.png \(png\)/);
  });

  it("refuses a missing file and a folder", async () => {
    await expectRefusal(ask(file("missing.png")), ImageError, "IMAGE_UNREADABLE", /^Cannot read image: no such file: .*missing\.png$/);
    await expectRefusal(ask(file("a-folder.jpg")), ImageError, "IMAGE_UNREADABLE", /not a file: .*a-folder\.jpg$/);
  });

  it("refuses bytes over `maxBytes` without decoding them", async () => {
    await expectRefusal(
      ask(Buffer.alloc(MAX_BYTES + 1)),
      ImageError,
      "IMAGE_TOO_LARGE",
      new RegExp(`^The image is ${MAX_BYTES + 1} bytes, more than the \`maxBytes\` limit of ${MAX_BYTES}$`),
    );
  });

  it("the model still answers after the broken files", async () => {
    await expectServes(model);
  });
});

describe("an extreme aspect ratio: 20000 pixels wide", () => {
  // 20000×1 is only 20000 pixels, far below `maxPixels`, so the SDK decodes it. The Idefics2 processor's
  // image splitting halves it into 0-pixel-tall crops and transformers divides by zero (the reference program
  // fails the same way), so the worker refuses it up front with a clear ImageError instead of a ZeroDivisionError.
  it("refuses 20000×1 with image splitting on, saying why and what to do", async () => {
    const error = await expectRefusal(
      ask(file("20000x1.png")),
      ImageError,
      "IMAGE_UNREADABLE",
      /^Image 1 is 20000x1 pixels: with image splitting on, the Idefics2 processor cannot take an image less than 2 pixels tall/,
    );
    expect(error.fix).toMatch(/imageSplitting false/);
    await expectServes(model);
  });

  it("takes 20000×20: resized by the processor like any other picture", async () => {
    const result = await ask(file("20000x20.png"))();
    expect(result.tokenIds.length).toBeGreaterThan(0);
    expect(result.usage.imageTokens).toBeGreaterThan(0);
  });
});

describe("hostile image URLs (127.0.0.1 servers made by the test)", () => {
  it("refuses an unreachable URL (a closed port)", async () => {
    const port = await closedPort();
    await expectRefusal(
      ask(`http://127.0.0.1:${port}/picture.jpg`),
      ImageError,
      "IMAGE_FETCH_FAILED",
      new RegExp(`^Could not fetch http://127\\.0\\.0\\.1:${port}/picture\\.jpg: .*ECONNREFUSED`),
    );
  });

  it("gives up on a server that never answers after `fetchTimeoutMs`", async () => {
    const error = await expectRefusal(
      ask(server.url("/hang")),
      ImageError,
      "IMAGE_FETCH_FAILED",
      /\/hang: timed out after 1000 ms$/,
      FETCH_TIMEOUT_MS + 2000,
    );
    expect(error.fix).toMatch(/timeoutMs/);
  });

  it("cuts off an endless body at the `maxBytes` cap", async () => {
    await expectRefusal(
      ask(server.url("/endless")),
      ImageError,
      "IMAGE_TOO_LARGE",
      new RegExp(`/endless sent more than ${MAX_BYTES} bytes, more than the \`maxBytes\` limit of ${MAX_BYTES}$`),
    );
  });

  it("refuses a body that declares 1 GB before reading it", async () => {
    await expectRefusal(ask(server.url("/declares-1gb")), ImageError, "IMAGE_TOO_LARGE", /\/declares-1gb declares 1073741824 bytes/, 1500);
  });

  it("refuses a redirect to file:///etc/passwd", async () => {
    await expectRefusal(
      ask(server.url("/to-file")),
      ImageError,
      "IMAGE_FETCH_FAILED",
      /^Could not fetch file:\/\/\/etc\/passwd \(redirected from http:\/\/127\.0\.0\.1:\d+\/to-file\): only http: and https: URLs are fetched, not `file:`$/,
    );
  });

  it("refuses a redirect to ftp:", async () => {
    await expectRefusal(
      ask(server.url("/to-ftp")),
      ImageError,
      "IMAGE_FETCH_FAILED",
      /only http: and https: URLs are fetched, not `ftp:`$/,
    );
  });

  it("stops a redirect loop at `maxRedirects`", async () => {
    await expectRefusal(
      ask(server.url("/loop")),
      ImageError,
      "IMAGE_FETCH_FAILED",
      /\/loop: more than 5 redirects \(the `maxRedirects` option\)$/,
    );
  });

  it("refuses an HTTP error status, naming it", async () => {
    await expectRefusal(ask(server.url("/nothing-here.jpg")), ImageError, "IMAGE_FETCH_FAILED", /\/nothing-here\.jpg: HTTP 404 Not Found$/);
  });

  it("refuses an HTML page served as a picture", async () => {
    await expectRefusal(ask(server.url("/html")), ImageError, "IMAGE_UNREADABLE", /\/html: not an image format sharp recognises/);
  });

  it("refuses a URL scheme other than http(s) given directly", async () => {
    await expectRefusal(
      ask("ftp://127.0.0.1/picture.jpg"),
      ImageError,
      "IMAGE_FETCH_FAILED",
      /only http: and https: URLs are fetched, not `ftp:`$/,
    );
  });

  it("fetches a real picture through a redirect, and answers about it", async () => {
    const result = await ask(server.url("/redirect-to-second"))();
    expect(result.text.toLowerCase()).toContain("blue");
  });
});

// Odd but valid: each must give a result, the bytes sent to the worker must be PIL's load_image pixels, and the
// tokens must equal those for PIL's pixels sent as a plain RGB PNG.
const VALID: [file: string, what: string][] = [
  ["pil-cmyk.jpg", "a CMYK JPEG"],
  ["sharp-cmyk-icc.jpg", "a CMYK JPEG with a CMYK profile"],
  ["pil-gray16.png", "a 16-bit grayscale PNG"],
  ["sharp-rgb16.png", "a 16-bit RGB PNG"],
  ["pil-gray.jpg", "a grayscale JPEG"],
  ["pil-gray.png", "a grayscale PNG"],
  ["pil-palette.png", "a palette PNG"],
  ["pil-palette-trns.png", "a palette PNG with transparency"],
  ["pil-rgba.png", "an RGBA PNG"],
  ["pil-lossless-alpha.webp", "a WebP with alpha"],
  ["pil-animated.gif", "an animated GIF"],
  ["sharp-animated-transparent.gif", "an animated GIF with transparency"],
  ["pil-animated.webp", "an animated WebP"],
  ["sharp-animated-alpha.webp", "an animated WebP with alpha"],
];

describe("odd but valid pictures work end to end, with PIL's pixels", () => {
  it.each(VALID)("%s (%s)", async (name) => {
    const expected = reference.get(name);
    if (!expected || "error" in expected) throw new Error(`PIL could not read ${name}: ${JSON.stringify(expected)}`);
    const path = join(folder, "valid", name);
    const messages = [user(image(path), colourQuestion)];
    const prepared = await prepareGeneration(messages, {}, {}, { stream: false });
    expect(prepared.params.images).toEqual([{ offset: 0, length: expected.rgb.length, width: expected.width, height: expected.height }]);
    expect(Buffer.concat(prepared.payload).equals(expected.rgb), "the payload is PIL's pixels").toBe(true);

    const result = await model.generate(messages, { maxNewTokens: 8 });
    expect(result.tokenIds.length).toBeGreaterThan(0);
    const pilPng = await sharp(expected.rgb, { raw: { width: expected.width, height: expected.height, channels: 3 } })
      .png()
      .toBuffer();
    const fromPil = await model.generate([user(image(pilPng), colourQuestion)], { maxNewTokens: 8 });
    expect(result.tokenIds).toEqual(fromPil.tokenIds);
  });

  it("the model still answers at the end", async () => {
    await expectServes(model);
  });
});

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { ImageError } from "../../src/errors.js";
import { describeSource } from "../../src/images/describe-source.js";
import { ImageSource } from "../../src/images/image-source.js";
import { loadImage } from "../../src/images/load-image.js";
import { closedPort, localServer } from "../corpus/corpus-helpers.js";
import { demoSecond } from "../helpers/pictures.js";
import { blackPng } from "./png-declaring.js";
import { noiseRgba } from "./sharp-fixtures.js";

// A data URL is the same picture as the file of its bytes: loadImage gives the same pixels for both, in every
// format the package reads, and refuses what it refuses for files (too many bytes, too many pixels) plus what
// only a data URL can get wrong (bad base64, a media type that is not an image), each with a short message.

const raw = () => sharp(noiseRgba(53, 37), { raw: { width: 53, height: 37, channels: 4 } });
const formats: [mediaType: string, encode: () => Promise<Buffer>][] = [
  ["image/png", () => raw().png().toBuffer()],
  ["image/jpeg", () => raw().jpeg({ quality: 90 }).toBuffer()],
  ["image/webp", () => raw().webp({ quality: 90 }).toBuffer()],
  ["image/gif", () => raw().gif().toBuffer()],
  ["image/tiff", () => raw().tiff().toBuffer()],
  ["image/avif", () => raw().avif().toBuffer()],
];
const dataUrl = (mediaType: string, bytes: Buffer) => `data:${mediaType};base64,${bytes.toString("base64")}`;
// Every byte as %XX: the RFC 2397 form without `;base64`.
const percentEncoded = (mediaType: string, bytes: Buffer) =>
  `data:${mediaType},${[...bytes].map((byte) => `%${byte.toString(16).padStart(2, "0")}`).join("")}`;

let folder: string;

beforeAll(async () => {
  folder = await mkdtemp(join(tmpdir(), "idefics2-data-url-"));
});

afterAll(async () => {
  await rm(folder, { recursive: true, force: true });
});

afterEach(() => {
  vi.restoreAllMocks();
});

async function imageError(promise: Promise<unknown>): Promise<ImageError> {
  const error = await promise.then(
    () => {
      throw new Error("expected a failure");
    },
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(ImageError);
  const imageError = error as ImageError;
  expect(imageError.message).not.toMatch(/\n/);
  expect(imageError.message.length, imageError.message).toBeLessThan(300);
  return imageError;
}

describe("loadImage on a data URL", () => {
  it.each(formats)("gives the pixels of the same %s file, as a string and as a URL object", async (mediaType, encode) => {
    const bytes = await encode();
    const path = join(folder, `picture.${mediaType.slice("image/".length)}`);
    await writeFile(path, bytes);
    const fromFile = await loadImage(path);
    const url = dataUrl(mediaType, bytes);
    for (const source of [url, new URL(url), percentEncoded(mediaType, bytes)]) {
      const fromData = await loadImage(source);
      expect({ width: fromData.width, height: fromData.height, format: fromData.format }).toEqual({
        width: fromFile.width,
        height: fromFile.height,
        format: fromFile.format,
      });
      expect(fromData.data.equals(fromFile.data), `${mediaType} pixels`).toBe(true);
      expect(fromData.source).toMatch(/^data:image\/[a-z]+[;,]/);
    }
  });

  it("reads base64 as browsers do: line breaks and spaces ignored, padding optional, percent-escapes decoded", async () => {
    // A PNG whose base64 ends in padding: its length is not a multiple of 3.
    let level = 9;
    let bytes = await raw().png({ compressionLevel: level }).toBuffer();
    while (bytes.length % 3 === 0) bytes = await raw().png({ compressionLevel: --level }).toBuffer();
    const path = join(folder, "padded.png");
    await writeFile(path, bytes);
    const fromFile = await loadImage(path);
    const base64 = bytes.toString("base64");
    expect(base64.endsWith("=")).toBe(true);
    const variants = [
      `data:image/png;base64,${base64.replace(/.{76}/g, "$&\r\n")}`,
      `data:image/png;base64,${base64.replace(/=+$/, "")}`,
      `data:image/png;base64,${base64.replaceAll("+", "%2B").replaceAll("/", "%2F").replaceAll("=", "%3D")}`,
      `DATA:IMAGE/PNG;BASE64,${base64}`,
      `data:image/png;name=first.png;base64,${base64}`,
      // No media type, or a generic one: the bytes say what they are.
      `data:;base64,${base64}`,
      `data:application/octet-stream;base64,${base64}`,
    ];
    for (const url of variants) expect((await loadImage(url)).data.equals(fromFile.data), url.slice(0, 50)).toBe(true);
  });

  it("decodes by the bytes, as transformers' load_image does, when the media type names another format", async () => {
    const jpeg = await import("node:fs/promises").then((fs) => fs.readFile(demoSecond));
    const fromData = await loadImage(dataUrl("image/png", jpeg));
    expect(fromData.format).toBe("jpeg");
    expect(fromData.data.equals((await loadImage(demoSecond)).data)).toBe(true);
  });

  it("is described by its media type and first characters, with its length, never in full", async () => {
    const url = `data:image/png;base64,iVBORw0KG${"A".repeat(2059 - 31)}`;
    expect(url).toHaveLength(2059);
    expect(describeSource(url)).toBe("data:image/png;base64,iVBORw0KG… (2,059 characters)");
    expect(describeSource(new URL(url))).toBe("data:image/png;base64,iVBORw0KG… (2,059 characters)");
    expect(describeSource("data:image/png;base64,iVBO")).toBe("data:image/png;base64,iVBO");
  });

  it("is accepted by the ImageSource schema, and a file named data:… is read through ./", async () => {
    expect(ImageSource.safeParse("data:image/png;base64,iVBO").success).toBe(true);
    const path = join(folder, "data:odd.png");
    await writeFile(path, await raw().png().toBuffer());
    expect((await loadImage(path)).width).toBe(53);
  });
});

describe("loadImage refuses a bad data URL with a typed error", () => {
  it("refuses data over maxBytes from its encoded length, before decoding any of it", async () => {
    const bytes = await raw().png().toBuffer();
    const from = vi.spyOn(Buffer, "from");
    const error = await imageError(loadImage(dataUrl("image/png", bytes), { maxBytes: bytes.length - 1 }));
    expect(error.code).toBe("IMAGE_TOO_LARGE");
    expect(error.message).toMatch(new RegExp(`holds ${bytes.length} bytes, more than the \`maxBytes\` limit of ${bytes.length - 1}`));
    const decodes = () => from.mock.calls.filter((call) => (call as unknown[])[1] === "base64").length;
    expect(decodes()).toBe(0);
    // Exactly maxBytes is allowed (and is decoded, as the spy sees); so is the percent-encoded form, counted the same way.
    expect((await loadImage(dataUrl("image/png", bytes), { maxBytes: bytes.length })).width).toBe(53);
    expect(decodes()).toBe(1);
    from.mockRestore();
    const percent = await imageError(loadImage(percentEncoded("image/png", bytes), { maxBytes: bytes.length - 1 }));
    expect(percent.code).toBe("IMAGE_TOO_LARGE");
  });

  it("refuses 96 MB of base64 against the default 64 MiB limit in well under a second", async () => {
    const url = `data:image/png;base64,${"A".repeat(96_000_000)}`;
    const started = performance.now();
    const error = await imageError(loadImage(url));
    expect(error.code).toBe("IMAGE_TOO_LARGE");
    expect(error.message).toMatch(/^data:image\/png;base64,AAAAAAAAA… \(96,000,022 characters\) holds 72000000 bytes/);
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it("refuses a picture over maxPixels from its header (a decompression bomb)", async () => {
    const bomb = blackPng(12_000, 10_000);
    const error = await imageError(loadImage(dataUrl("image/png", bomb)));
    expect(error.code).toBe("IMAGE_TOO_LARGE");
    expect(error.message).toMatch(/12000×10000 = 120000000 pixels, more than the `maxPixels` limit of 100000000/);
  });

  it.each([
    ["a character outside base64", "data:image/png;base64,iVBORw0K!GgoAAAA", /not valid base64 \(`!` at data position 8\)/],
    ["padding in the middle", "data:image/png;base64,iVBO=w0KGgoAAAA", /not valid base64 \(`=` at data position 4\)/],
    ["a length base64 cannot have", "data:image/png;base64,iVBORw0KG", /not valid base64 \(its length is not that of base64\)/],
    ["no comma", "data:image/png;base64", /a data URL needs a comma before its data/],
    ["no data", "data:image/png;base64,", /it holds no data/],
    ["a text media type", "data:text/plain;base64,SGVsbG8=", /its media type text\/plain is not an image/],
    ["a PDF", "data:application/pdf;base64,JVBERi0xLjQ=", /its media type application\/pdf is not an image/],
    [
      "an SVG",
      "data:image/svg+xml,%3Csvg%20xmlns%3D%22http%3A%2F%2Fwww.w3.org%2F2000%2Fsvg%22%2F%3E",
      /image\/svg\+xml is an image format the package does not read/,
    ],
    ["a BMP", "data:image/bmp;base64,Qk0=", /image\/bmp is an image format the package does not read/],
    [
      "bytes that are no image",
      `data:image/png;base64,${Buffer.from("Dear diary").toString("base64")}`,
      /not an image format sharp recognises/,
    ],
  ])("%s", async (_what, url, message) => {
    const error = await imageError(loadImage(url));
    expect(error.code).toBe("IMAGE_UNREADABLE");
    expect(error.message).toMatch(message);
    expect(error.fix).toBeTruthy();
  });
});

describe("a data URL from a server", () => {
  it("is not followed from a redirect, and the refusal names it briefly", async () => {
    const target = `data:image/png;base64,${Buffer.alloc(6000, 7).toString("base64")}`;
    const server = await localServer({ "/redirect": (_request, response) => response.writeHead(302, { location: target }).end() });
    try {
      const error = await imageError(loadImage(server.url("/redirect")));
      expect(error.code).toBe("IMAGE_FETCH_FAILED");
      expect(error.message).toMatch(
        /^Could not fetch data:image\/png;base64,BwcHBwcHB… \(8,022 characters\) \(redirected from http:.*not `data:`$/,
      );
    } finally {
      await server.close();
    }
  });
});

describe("error messages quote at most a short prefix of the input", () => {
  it("names a 1 MB data URL in a few dozen characters", async () => {
    const url = `data:image/png;base64,${Buffer.alloc(786_432, 7).toString("base64")}`;
    expect(url.length).toBeGreaterThan(1_000_000);
    const error = await imageError(loadImage(url));
    expect(error.code).toBe("IMAGE_UNREADABLE");
    expect(error.message).toMatch(/^Cannot read data:image\/png;base64,BwcHBwcHB… \(1,048,598 characters\): /);
    expect(error.message.length).toBeLessThan(200);
  });

  it("cuts a 1 MB path and a 1 MB http URL to their start", async () => {
    const path = `/no/such/${"folder/".repeat(150_000)}picture.png`;
    const missing = await imageError(loadImage(path));
    expect(missing.message).toMatch(/^Cannot read image: the path is too long: \/no\/such\/folder\/folder.*… \(1,050,020 characters\)$/);
    expect(missing.message.length).toBeLessThan(200);

    const port = await closedPort();
    const url = `http://127.0.0.1:${port}/${"a".repeat(1_000_000)}.png`;
    const refused = await imageError(loadImage(url));
    expect(refused.code).toBe("IMAGE_FETCH_FAILED");
    expect(refused.message).toMatch(/^Could not fetch http:\/\/127\.0\.0\.1:\d+\/aaaa/);
    expect(refused.message.length).toBeLessThan(300);
  });
});

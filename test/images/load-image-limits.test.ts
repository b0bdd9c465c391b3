import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImageError } from "../../src/errors.js";
import { loadImage } from "../../src/images/load-image.js";
import { blackPng } from "./png-declaring.js";
import { noiseRgba } from "./sharp-fixtures.js";

let folder: string;
const jpeg = await sharp(noiseRgba(53, 37), { raw: { width: 53, height: 37, channels: 4 } })
  .jpeg()
  .toBuffer();

beforeAll(async () => {
  folder = await mkdtemp(join(tmpdir(), "idefics2-limits-"));
});

afterAll(async () => {
  await rm(folder, { recursive: true, force: true });
});

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error("expected a failure");
    },
    (error: unknown) => error,
  );
}

describe("loadImage limits", () => {
  it("refuses a 15 kB PNG of 12000×10000 pixels (a decompression bomb) from its header, within a second", async () => {
    const bomb = blackPng(12_000, 10_000);
    expect(bomb.length).toBeLessThan(64 * 1024);
    const path = join(folder, "bomb.png");
    await writeFile(path, bomb);
    const started = performance.now();
    const error = await rejection(loadImage(path));
    expect(performance.now() - started).toBeLessThan(1000);
    expect(error).toBeInstanceOf(ImageError);
    expect(error).toMatchObject({
      code: "IMAGE_TOO_LARGE",
      message: `${path} (png) is 12000×10000 = 120000000 pixels, more than the \`maxPixels\` limit of 100000000`,
    });
  });

  it("refuses a tiny PNG whose header declares 30000×30000, within a second", async () => {
    const started = performance.now();
    const error = await rejection(loadImage(blackPng(30_000, 30_000, 1)));
    expect(performance.now() - started).toBeLessThan(1000);
    expect(error).toMatchObject({ code: "IMAGE_TOO_LARGE", message: expect.stringContaining("30000×30000 = 900000000 pixels") });
  });

  it("decodes a bomb that fits a raised maxPixels", async () => {
    const image = await loadImage(blackPng(3000, 2000), { maxPixels: 6_000_000 });
    expect({ width: image.width, height: image.height, bytes: image.data.length, black: image.data.every((byte) => byte === 0) }).toEqual({
      width: 3000,
      height: 2000,
      bytes: 18_000_000,
      black: true,
    });
  });

  it("applies maxPixels to an ordinary picture too", async () => {
    expect(await rejection(loadImage(jpeg, { maxPixels: 1000 }))).toMatchObject({
      code: "IMAGE_TOO_LARGE",
      message: `a ${jpeg.length}-byte buffer (jpeg) is 53×37 = 1961 pixels, more than the \`maxPixels\` limit of 1000`,
    });
  });

  it("refuses files and buffers over maxBytes before decoding", async () => {
    const path = join(folder, "picture.jpg");
    await writeFile(path, jpeg);
    expect(await rejection(loadImage(path, { maxBytes: 100 }))).toMatchObject({
      code: "IMAGE_TOO_LARGE",
      message: `${path} is ${jpeg.length} bytes, more than the \`maxBytes\` limit of 100`,
    });
    expect(await rejection(loadImage(new Uint8Array(jpeg), { maxBytes: 100 }))).toMatchObject({ code: "IMAGE_TOO_LARGE" });
  });

  it("downscales to maxEdge keeping the aspect ratio, and leaves smaller pictures alone", async () => {
    const full = await loadImage(jpeg);
    const small = await loadImage(jpeg, { maxEdge: 20 });
    expect({ width: small.width, height: small.height, bytes: small.data.length }).toEqual({ width: 20, height: 14, bytes: 20 * 14 * 3 });
    const untouched = await loadImage(jpeg, { maxEdge: 53 });
    expect(untouched.data.equals(full.data)).toBe(true);
  });

  it("names the option and the value when a limit is invalid or unknown", async () => {
    expect(await rejection(loadImage(jpeg, { maxPixels: -1 }))).toMatchObject({
      name: "InvalidInputError",
      code: "INVALID_OPTIONS",
      message: expect.stringMatching(/`maxPixels`.*got `-1` \(number\)/),
    });
    expect(await rejection(loadImage(jpeg, { maxEdge: 1.5 }))).toMatchObject({ message: expect.stringMatching(/`maxEdge`.*got `1.5`/) });
    expect(await rejection(loadImage(jpeg, { maxPixel: 5 } as never))).toMatchObject({
      code: "INVALID_OPTIONS",
      message: expect.stringContaining("maxPixel"),
    });
  });
});

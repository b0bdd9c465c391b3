import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImageError } from "../../src/errors.js";
import { loadImage } from "../../src/images/load-image.js";
import { noiseRgba } from "./sharp-fixtures.js";

const raw = () => sharp(noiseRgba(53, 37), { raw: { width: 53, height: 37, channels: 4 } });
const encoded: Record<string, Buffer> = {
  jpeg: await raw().jpeg().toBuffer(),
  png: await raw().png().toBuffer(),
  webp: await raw().webp().toBuffer(),
  gif: await raw().gif().toBuffer(),
};

let folder: string;

beforeAll(async () => {
  folder = await mkdtemp(join(tmpdir(), "idefics2-errors-"));
});

afterAll(async () => {
  await rm(folder, { recursive: true, force: true });
});

async function imageError(promise: Promise<unknown>): Promise<{ code: string; message: string }> {
  const error = await promise.then(
    () => {
      throw new Error("expected a failure");
    },
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(ImageError);
  return { code: (error as ImageError).code, message: (error as ImageError).message };
}

describe("loadImage on input that is not a readable image", () => {
  it("says no such file for a missing path", async () => {
    const path = join(folder, "missing.jpg");
    expect(await imageError(loadImage(path))).toEqual({ code: "IMAGE_UNREADABLE", message: `Cannot read image: no such file: ${path}` });
  });

  it("says a folder is not a file", async () => {
    await mkdir(join(folder, "a-folder.jpg"));
    expect(await imageError(loadImage(join(folder, "a-folder.jpg")))).toMatchObject({
      code: "IMAGE_UNREADABLE",
      message: expect.stringContaining("not a file"),
    });
  });

  it("refuses a zero-byte file, naming it", async () => {
    const path = join(folder, "empty.jpg");
    await writeFile(path, "");
    expect(await imageError(loadImage(path))).toEqual({
      code: "IMAGE_UNREADABLE",
      message: `Cannot read ${path}: not an image format sharp recognises (Input Buffer is empty)`,
    });
  });

  it("refuses a text file named .jpg, naming it", async () => {
    const path = join(folder, "notes.jpg");
    await writeFile(path, "these are not pixels\n");
    expect(await imageError(loadImage(path))).toEqual({
      code: "IMAGE_UNREADABLE",
      message: `Cannot read ${path}: not an image format sharp recognises (Input buffer contains unsupported image format)`,
    });
  });

  it.each(Object.keys(encoded))("refuses a truncated %s, naming the format", async (format) => {
    const bytes = encoded[format]!;
    const path = join(folder, `truncated.${format}`);
    await writeFile(path, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
    const { code, message } = await imageError(loadImage(path));
    expect(code).toBe("IMAGE_UNREADABLE");
    expect(message).toMatch(new RegExp(`^Cannot (read|decode) ${path.replaceAll(".", "\\.")}.*${format}`));
  });

  it("refuses SVG, which the reference cannot read", async () => {
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>');
    expect(await imageError(loadImage(svg))).toMatchObject({
      code: "IMAGE_UNREADABLE",
      message: expect.stringContaining("sharp sees svg"),
    });
  });

  it("refuses a value that is no image source", async () => {
    expect(await imageError(loadImage(42 as never))).toEqual({ code: "IMAGE_UNREADABLE", message: "Cannot read an image from a number" });
    expect(await imageError(loadImage("" as never))).toMatchObject({ code: "IMAGE_UNREADABLE" });
  });
});

describe("loadImage on the other kinds of source", () => {
  it("reads a file: URL as a path", async () => {
    const path = join(folder, "picture.png");
    await writeFile(path, encoded.png!);
    const fromUrl = await loadImage(pathToFileURL(path));
    const fromPath = await loadImage(path);
    expect(fromUrl.data.equals(fromPath.data)).toBe(true);
  });

  it("takes a sharp instance's own output, leaving the instance usable and unchanged", async () => {
    const path = join(folder, "picture.png");
    await writeFile(path, encoded.png!);
    const instance = sharp(path).resize(20);
    const before = await instance.clone().png().toBuffer();
    const image = await loadImage(instance);
    expect({ width: image.width, height: image.height, format: image.format, source: image.source }).toEqual({
      width: 20,
      height: 14,
      format: "png",
      source: "a sharp instance",
    });
    expect((await instance.clone().png().toBuffer()).equals(before)).toBe(true);
    expect(await readFile(path)).toEqual(encoded.png);
  });
});

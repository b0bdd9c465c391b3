import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadImage } from "../../src/images/load-image.js";
import { pilReference, type PilResult } from "./pil-reference.js";
import { writeSharpFixtures } from "./sharp-fixtures.js";

// Every fixture, and what it exercises; each must give PIL's pixels byte for byte.
const CASES: [file: string, what: string][] = [
  ["pil-baseline-420.jpg", "a baseline 4:2:0 JPEG"],
  ["pil-422.jpg", "a 4:2:2 JPEG"],
  ["pil-444.jpg", "a 4:4:4 JPEG"],
  ["pil-progressive.jpg", "a progressive JPEG"],
  ["pil-gray.jpg", "a grayscale JPEG"],
  ["pil-cmyk.jpg", "a CMYK JPEG (Adobe, inverted)"],
  ["sharp-cmyk-icc.jpg", "a CMYK JPEG with an embedded CMYK profile"],
  ["pil-extraneous-bytes.jpg", "a JPEG libjpeg warns about"],
  ...[1, 2, 3, 4, 5, 6, 7, 8].map((n): [string, string] => [`pil-orientation-${n}.jpg`, `a JPEG with EXIF orientation ${n}`]),
  ["sharp-orientation-7.jpg", "a JPEG with orientation 7 written by sharp"],
  ["sharp-p3.jpg", "a JPEG with a Display P3 profile (ignored, as PIL does)"],
  ["pil-rgb.png", "an RGB PNG"],
  ["pil-rgba.png", "an RGBA PNG (alpha dropped, not composited)"],
  ["pil-la.png", "a grayscale + alpha PNG"],
  ["pil-gray.png", "a grayscale PNG"],
  ["pil-bilevel.png", "a 1-bit PNG"],
  ["pil-palette.png", "a palette PNG"],
  ["pil-palette-trns.png", "a palette PNG with tRNS transparency"],
  ["pil-gray-trns.png", "a grayscale PNG with a tRNS colour"],
  ["pil-rgb-trns.png", "an RGB PNG with a tRNS colour"],
  ["pil-orientation-6.png", "a PNG with an eXIf orientation"],
  ["pil-gray16.png", "a 16-bit grayscale PNG (clipped to 255, as PIL's I;16 does)"],
  ["pil-gray16-small.png", "a 16-bit grayscale PNG with values around 255"],
  ["pil-gray16-trns.png", "a 16-bit grayscale PNG with a tRNS colour"],
  ["sharp-graya16.png", "a 16-bit grayscale + alpha PNG"],
  ["sharp-rgb16.png", "a 16-bit RGB PNG"],
  ["sharp-rgba16.png", "a 16-bit RGBA PNG"],
  ["sharp-p3.png", "a PNG with a Display P3 profile (ignored, as PIL does)"],
  ["pil-lossy.webp", "a lossy WebP"],
  ["pil-lossless.webp", "a lossless WebP"],
  ["pil-lossy-alpha.webp", "a lossy WebP with alpha"],
  ["pil-lossless-alpha.webp", "a lossless WebP with alpha"],
  ["pil-orientation-6.webp", "a WebP with an EXIF orientation"],
  ["pil-animated.webp", "an animated WebP (first frame)"],
  ["sharp-animated-alpha.webp", "an animated WebP with alpha (first frame)"],
  ["pil-static.gif", "a static GIF"],
  ["pil-gray.gif", "a grayscale GIF"],
  ["pil-transparent.gif", "a GIF with a transparent index (its palette colour, as PIL gives)"],
  ["pil-animated.gif", "an animated GIF (first frame)"],
  ["sharp-animated-transparent.gif", "an animated GIF with transparency written by sharp"],
  ["pil-partial-static.gif", "a GIF whose first frame is smaller than its screen"],
  ["pil-partial-transparent.gif", "a transparent GIF whose first frame is smaller than its screen"],
  ["sharp-rgb.tiff", "an RGB TIFF"],
  ["sharp-lossless.avif", "a lossless AVIF"],
];

// Decoded by different libraries (libheif in sharp, libavif in PIL) whose YUV → RGB rounding differs by one.
const NEAR_CASES: [file: string, what: string, maxDifference: number][] = [["sharp-lossy.avif", "a lossy AVIF", 1]];

describe("loadImage gives the pixels of transformers' load_image", () => {
  let folder: string;
  let reference: Map<string, PilResult>;

  beforeAll(async () => {
    folder = await mkdtemp(join(tmpdir(), "idefics2-parity-"));
    await writeSharpFixtures(folder);
    reference = await pilReference(folder);
  });

  afterAll(async () => {
    await rm(folder, { recursive: true, force: true });
  });

  it("covers every fixture file that was written", () => {
    expect([...reference.keys()].sort()).toEqual([...CASES, ...NEAR_CASES].map(([file]) => file).sort());
  });

  // Loads `file` both ways and returns how many bytes differ and by how much at most.
  async function compare(file: string): Promise<{ differing: number; largest: number }> {
    const expected = reference.get(file);
    if (expected === undefined || "error" in expected) throw new Error(`PIL could not read ${file}: ${JSON.stringify(expected)}`);
    const image = await loadImage(join(folder, file));
    expect({ width: image.width, height: image.height }).toEqual({ width: expected.width, height: expected.height });
    expect(image.data.length).toBe(expected.width * expected.height * 3);
    let differing = 0;
    let largest = 0;
    image.data.forEach((byte, index) => {
      const difference = Math.abs(byte - expected.rgb[index]!);
      if (difference > 0) differing += 1;
      largest = Math.max(largest, difference);
    });
    return { differing, largest };
  }

  it.each(CASES)("%s: %s, byte for byte", async (file) => {
    expect(await compare(file)).toEqual({ differing: 0, largest: 0 });
  });

  it.each(NEAR_CASES)("%s: %s, within %i per channel", async (file, _what, maxDifference) => {
    const { largest } = await compare(file);
    expect(largest).toBeLessThanOrEqual(maxDifference);
  });

  it("gives the same pixels from the file's bytes as from its path, and leaves the bytes untouched", async () => {
    for (const file of ["pil-cmyk.jpg", "pil-transparent.gif", "pil-gray16.png", "pil-orientation-6.jpg"]) {
      const bytes = await readFile(join(folder, file));
      const copy = Buffer.from(bytes);
      const fromPath = await loadImage(join(folder, file));
      const fromBuffer = await loadImage(bytes);
      const fromView = await loadImage(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      expect(fromBuffer.data.equals(fromPath.data)).toBe(true);
      expect(fromView.data.equals(fromPath.data)).toBe(true);
      expect(bytes.equals(copy)).toBe(true);
    }
  });

  it("describes what it decoded: format, size and source", async () => {
    const image = await loadImage(join(folder, "pil-orientation-6.jpg"));
    expect({ format: image.format, width: image.width, height: image.height, source: image.source }).toEqual({
      format: "jpeg",
      width: 37,
      height: 53,
      source: join(folder, "pil-orientation-6.jpg"),
    });
  });
});

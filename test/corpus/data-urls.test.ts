import { readFile } from "node:fs/promises";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImageError } from "../../src/errors.js";
import { image, user } from "../../src/messages.js";
import { Idefics2 } from "../../src/model.js";
import { demoFirst, demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { colourQuestion, expectRefusal, expectServes } from "./corpus-helpers.js";

// data: URLs against one loaded model: the same picture as a data URL and as a file gives the same token ids, and a
// data URL over the model's byte or pixel limits, or one that is not an image, is refused quickly with a short
// message, while the model keeps serving.

const MAX_BYTES = 64 * 1024;
const MAX_PIXELS = 1_000_000;

let model: Idefics2;

beforeAll(async () => {
  model = await Idefics2.load({ python: testPython(), images: { maxBytes: MAX_BYTES, maxPixels: MAX_PIXELS } });
});

afterAll(async () => {
  await model?.close();
});

const dataUrl = async (path: string, mediaType: string) => `data:${mediaType};base64,${(await readFile(path)).toString("base64")}`;
const ask = (source: string | URL) => () => model.generate([user(image(source), colourQuestion)], { maxNewTokens: 16 });

describe("a data URL on the real model", () => {
  it.each([
    ["JPEG", demoSecond, "image/jpeg"],
    ["PNG", demoFirst, "image/png"],
  ])("gives the token ids of the same %s file, as a string, a URL object and through `images`", async (_format, path, mediaType) => {
    const url = await dataUrl(path, mediaType);
    const fromFile = await model.generate([user(image(path), colourQuestion)], { maxNewTokens: 16 });
    expect(fromFile.tokenIds.length).toBeGreaterThan(0);
    for (const source of [url, new URL(url)]) {
      const fromData = await model.generate([user(image(source), colourQuestion)], { maxNewTokens: 16 });
      expect(fromData.tokenIds).toEqual(fromFile.tokenIds);
      expect(fromData.text).toBe(fromFile.text);
      expect(fromData.usage).toEqual(fromFile.usage);
    }
    const beside = await model.generate([user(image(), colourQuestion)], { maxNewTokens: 16, images: [url] });
    expect(beside.tokenIds).toEqual(fromFile.tokenIds);
  });

  it("answers the second picture's colour from its data URL", async () => {
    const result = await ask(await dataUrl(demoSecond, "image/jpeg"))();
    expect(result.text.toLowerCase()).toContain("blue");
  });
});

describe("a data URL the model refuses, then keeps serving", () => {
  it("refuses data over the model's maxBytes", async () => {
    const url = `data:image/png;base64,${Buffer.alloc(MAX_BYTES + 3, 1).toString("base64")}`;
    await expectRefusal(
      ask(url),
      ImageError,
      "IMAGE_TOO_LARGE",
      /^data:image\/png;base64,AQEBAQEBA… \(87,410 characters\) holds 65539 bytes/,
    );
    await expectServes(model);
  });

  it("refuses a picture over the model's maxPixels from its header", async () => {
    const wide = await sharp({ create: { width: 2000, height: 1000, channels: 3, background: { r: 30, g: 60, b: 220 } } })
      .png()
      .toBuffer();
    expect(wide.length).toBeLessThan(MAX_BYTES);
    const url = `data:image/png;base64,${wide.toString("base64")}`;
    await expectRefusal(ask(url), ImageError, "IMAGE_TOO_LARGE", /2000×1000 = 2000000 pixels, more than the `maxPixels` limit of 1000000/);
    await expectServes(model);
  });

  it.each([
    ["bad base64", "data:image/jpeg;base64,/9j/4AAQ*SkZJRgABAQ", /not valid base64/],
    ["a text media type", "data:text/plain,What%20colour%3F", /media type text\/plain is not an image/],
    ["an SVG", "data:image/svg+xml;base64,PHN2Zy8+", /image\/svg\+xml is an image format the package does not read/],
  ])("refuses %s", async (_what, url, message) => {
    await expectRefusal(ask(url), ImageError, "IMAGE_UNREADABLE", message);
    await expectServes(model);
  });

  it("names a 1 MB data URL by a short prefix", async () => {
    const url = `data:image/png;base64,${Buffer.alloc(786_432, 7).toString("base64")}`;
    const error = await expectRefusal(
      ask(url),
      ImageError,
      "IMAGE_TOO_LARGE",
      /^data:image\/png;base64,BwcHBwcHB… \(1,048,598 characters\)/,
    );
    expect(error.message.length).toBeLessThan(160);
    await expectServes(model);
  });
});

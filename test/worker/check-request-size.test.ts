import { describe, expect, it } from "vitest";
import { ImageError, InvalidInputError } from "../../src/errors.js";
import { MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES } from "../../src/protocol/frame-codec.js";
import type { GenerateParams } from "../../src/protocol/messages.js";
import { checkRequestSize } from "../../src/worker/check-request-size.js";
import { textGenerateParams } from "../helpers/wire-params.js";

// What one frame cannot carry is refused before anything is sent, naming the field (or the pictures) and the limit.

function withPictures(count: number, width: number, height: number): GenerateParams {
  const images = Array.from({ length: count }, (_, index) => ({
    offset: index * width * height * 3,
    length: width * height * 3,
    width,
    height,
  }));
  return { ...textGenerateParams("What are these?", 5), images };
}

describe("checkRequestSize", () => {
  it("refuses four 10000×9000 pictures (1.01 GiB of pixels) with ImageError IMAGE_TOO_LARGE naming the limit", () => {
    const params = withPictures(4, 10_000, 9_000);
    const error = (() => {
      try {
        checkRequestSize(params, 4 * 10_000 * 9_000 * 3);
      } catch (caught) {
        return caught;
      }
    })();
    expect(error).toBeInstanceOf(ImageError);
    expect(error).toMatchObject({
      code: "IMAGE_TOO_LARGE",
      message:
        "The 4 pictures of this request decode to 1.01 GiB of pixels (width × height × 3 bytes each), over the 1 GiB one request may carry",
    });
  });

  it("accepts pictures up to exactly 1 GiB of pixels, and text up to the header limit", () => {
    expect(() => checkRequestSize(withPictures(1, 1, 1), MAX_PAYLOAD_BYTES)).not.toThrow();
    expect(() => checkRequestSize(textGenerateParams("x".repeat(MAX_HEADER_BYTES - 4096), 5), 0)).not.toThrow();
  });

  it("names a stop string as the generation option it is (INVALID_OPTIONS)", () => {
    const params = textGenerateParams("hi", 5);
    params.options.stopStrings = ["stop", "\u0002".repeat(3 * 2 ** 20)];
    expect(() => checkRequestSize(params, 0)).toThrow(
      expect.objectContaining({
        constructor: InvalidInputError,
        code: "INVALID_OPTIONS",
        message: expect.stringContaining("`stopStrings[1]` alone is 18 MiB"),
      }),
    );
  });

  it("counts JSON's escapes and UTF-8's bytes, not characters: 6 MiB of 'é' (12 MiB) passes, 9 MiB (18 MiB) does not", () => {
    expect(() => checkRequestSize(textGenerateParams("é".repeat(6 * 2 ** 20), 5), 0)).not.toThrow();
    expect(() => checkRequestSize(textGenerateParams("é".repeat(9 * 2 ** 20), 5), 0)).toThrow(
      /`messages\[0\]\.content\[0\]\.text` alone is 18 MiB/,
    );
  });
});

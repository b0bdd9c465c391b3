import type { GifFrame } from "./read-gif-frame.js";

// PIL builds a GIF's first frame on a canvas of palette index `transparency ?? 0` and converts by palette, so
// transparent and uncovered pixels take that palette colour, where sharp gives them alpha 0 or black.
export function gifFrameToRgb(rgba: Buffer, width: number, height: number, frame: GifFrame): Buffer {
  const rgb = Buffer.alloc(width * height * 3);
  const fillIndex = frame.transparentIndex ?? 0;
  const palette = frame.palette;
  const fill = [0, 1, 2].map((channel) => palette?.[fillIndex * 3 + channel] ?? 0);
  const right = frame.left + frame.width;
  const bottom = frame.top + frame.height;
  for (let y = 0; y < height; y += 1) {
    const rowInside = y >= frame.top && y < bottom;
    for (let x = 0; x < width; x += 1) {
      const pixel = y * width + x;
      const inside = rowInside && x >= frame.left && x < right;
      const transparent = frame.transparentIndex !== undefined && rgba[pixel * 4 + 3] === 0;
      for (let channel = 0; channel < 3; channel += 1) {
        rgb[pixel * 3 + channel] = inside && !transparent ? rgba[pixel * 4 + channel]! : fill[channel]!;
      }
    }
  }
  return rgb;
}

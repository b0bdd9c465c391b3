// PIL opens 16-bit grayscale as mode I;16 and convert("RGB") clips each value to 255 (it does not scale).
export function gray16ToRgb(samples: Buffer, pixels: number, channels: number): Buffer {
  const rgb = Buffer.alloc(pixels * 3);
  for (let pixel = 0; pixel < pixels; pixel += 1) {
    // sharp writes 16-bit raw samples in the machine's byte order, little-endian on every platform it ships for.
    rgb.fill(Math.min(255, samples.readUInt16LE(pixel * channels * 2)), pixel * 3, pixel * 3 + 3);
  }
  return rgb;
}

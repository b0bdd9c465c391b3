// PIL's own CMYK → RGB (Convert.c cmyk2rgb), with no colour management: R = (255 − K) − C·(255 − K)/255, rounded its way.
export function cmykToRgb(cmyk: Buffer, pixels: number): Buffer {
  const rgb = Buffer.alloc(pixels * 3);
  for (let pixel = 0; pixel < pixels; pixel += 1) {
    const notBlack = 255 - cmyk[pixel * 4 + 3]!;
    for (let channel = 0; channel < 3; channel += 1) {
      const product = cmyk[pixel * 4 + channel]! * notBlack + 128;
      rgb[pixel * 3 + channel] = Math.max(0, notBlack - (((product >> 8) + product) >> 8));
    }
  }
  return rgb;
}

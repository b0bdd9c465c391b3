/** What PIL needs, beyond the pixels, to build a GIF's first frame: where it lies and what fills the rest. */
export interface GifFrame {
  screenWidth: number;
  screenHeight: number;
  left: number;
  top: number;
  width: number;
  height: number;
  /** The first frame's transparent palette index, from its graphic control extension. */
  transparentIndex: number | undefined;
  /** The first frame's palette (its local table, else the global one), RGB triples. */
  palette: Uint8Array | undefined;
}

// Walks the GIF blocks up to the first image descriptor; no pixel data is decoded. Undefined when malformed.
export function readGifFrame(bytes: Uint8Array): GifFrame | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const at = (offset: number): number => (offset < bytes.length ? bytes[offset]! : -1);
  if (bytes.length < 13 || String.fromCharCode(...bytes.subarray(0, 3)) !== "GIF") return undefined;
  const screenWidth = view.getUint16(6, true);
  const screenHeight = view.getUint16(8, true);
  let offset = 13;
  let palette: Uint8Array | undefined;
  const screenFlags = at(10);
  if (screenFlags & 0x80) {
    const size = 3 * 2 ** ((screenFlags & 7) + 1);
    palette = bytes.subarray(offset, offset + size);
    offset += size;
  }
  let transparentIndex: number | undefined;
  while (offset < bytes.length) {
    const block = at(offset);
    if (block === 0x2c) {
      if (offset + 10 > bytes.length) return undefined;
      const flags = at(offset + 9);
      if (flags & 0x80) palette = bytes.subarray(offset + 10, offset + 10 + 3 * 2 ** ((flags & 7) + 1));
      return {
        screenWidth,
        screenHeight,
        left: view.getUint16(offset + 1, true),
        top: view.getUint16(offset + 3, true),
        width: view.getUint16(offset + 5, true),
        height: view.getUint16(offset + 7, true),
        transparentIndex,
        palette,
      };
    }
    if (block !== 0x21) return undefined;
    const label = at(offset + 1);
    offset += 2;
    if (label === 0xf9 && at(offset) >= 4) transparentIndex = at(offset + 1) & 1 ? at(offset + 4) : undefined;
    // Skip the extension's sub-blocks up to the zero-length terminator.
    for (let length = at(offset); length > 0; length = at(offset)) offset += length + 1;
    if (offset >= bytes.length) return undefined;
    offset += 1;
  }
  return undefined;
}

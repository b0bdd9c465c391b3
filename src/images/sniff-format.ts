const SIGNATURES: [format: string, offset: number, bytes: string][] = [
  ["jpeg", 0, "\xff\xd8\xff"],
  ["png", 0, "\x89PNG"],
  ["gif", 0, "GIF8"],
  ["webp", 8, "WEBP"],
  ["tiff", 0, "II*\x00"],
  ["tiff", 0, "MM\x00*"],
  ["heif", 4, "ftyp"],
  ["svg", 0, "<svg"],
];

// The format a file claims by its first bytes, to name it when sharp cannot read the header at all.
export function sniffFormat(bytes: Uint8Array): string | undefined {
  const head = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.byteLength, 16)).toString("latin1");
  return SIGNATURES.find(([, offset, signature]) => head.startsWith(signature, offset))?.[0];
}

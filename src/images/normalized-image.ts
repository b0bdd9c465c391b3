/** A decoded picture as the worker receives it: what `transformers.image_utils.load_image` would give. */
export interface NormalizedImage {
  /** Raw 8-bit RGB pixels, row by row, `width * height * 3` bytes. */
  data: Buffer;
  width: number;
  height: number;
  /** The encoded format sharp recognised: jpeg, png, webp, gif, tiff, heif… */
  format: string;
  /** A short description of the source, for error messages. */
  source: string;
}

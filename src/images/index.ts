export { decodeImage } from "./decode-image.js";
export { fetchImage } from "./fetch-image.js";
export { FetchImageOptions } from "./fetch-image-options.js";
export { ImageSource, isSharpInstance } from "./image-source.js";
export { loadImage } from "./load-image.js";
export { LoadImageOptions, type ResolvedLoadImageOptions } from "./load-image-options.js";
export type { NormalizedImage } from "./normalized-image.js";

import { join } from "node:path";
import { packageRoot } from "./runtime/package-root.js";

/** The tiny Idefics2 shipped with the package (assets/tiny-idefics2), the default `model`. */
export const embeddedModelPath: string = join(packageRoot(), "assets", "tiny-idefics2");

/** The demo pictures and the blog-shaped conversation about them (assets/demo). */
export const demoAssetsPath: string = join(packageRoot(), "assets", "demo");

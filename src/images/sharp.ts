import { createRequire } from "node:module";
import type SharpModule from "sharp";

// sharp's ES module build imports its package.json `with { type: "json" }`, which Node 20.9 cannot parse and later
// Node 20 releases warn about (ExperimentalWarning); its CommonJS build is the same library without either.
const sharp: typeof SharpModule = createRequire(import.meta.url)("sharp");
export default sharp;

import { fileURLToPath } from "node:url";
import path from "node:path";

// This file sits one folder below src/ or dist/ (src/runtime/x.ts, dist/runtime/x.js): the root is two levels up.
const root = fileURLToPath(new URL("../../", import.meta.url));

/** The installed package's root folder (the one holding package.json and python/). @internal */
export function packageRoot(): string {
  return path.resolve(root);
}

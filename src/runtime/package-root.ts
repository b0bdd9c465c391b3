import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

// The first folder above this module whose package.json is this package's: from src/runtime/, dist/runtime/ and
// the CommonJS bundles in dist/cjs/ alike.
function findRoot(start: string): string {
  for (let folder = start; ; folder = path.dirname(folder)) {
    const manifest = path.join(folder, "package.json");
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, "utf8")) as { name?: unknown }).name === "idefics2") return folder;
    if (path.dirname(folder) === folder) throw new Error(`idefics2: no package.json of idefics2 above ${start}`);
  }
}

const root = findRoot(path.dirname(fileURLToPath(import.meta.url)));

/** The installed package's root folder (the one holding package.json and python/). @internal */
export function packageRoot(): string {
  return root;
}

import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

// The first folder above this module whose package.json is this package's: from src/runtime/, dist/runtime/ and
// the CommonJS bundle dist/cjs/bundle.js alike (dist/cjs/package.json, which only says "type": "commonjs", is passed by).
function findRoot(start: string): string {
  for (let folder = start; ; folder = path.dirname(folder)) {
    const manifest = path.join(folder, "package.json");
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, "utf8")) as { name?: unknown }).name === "idefics2") return folder;
    if (path.dirname(folder) === folder) {
      // A bundler that copied this code into an app's own file (instead of leaving idefics2 external) ends here.
      throw new Error(
        `idefics2: no package.json of idefics2 above ${start}; its Python worker and assets live in the installed package, so keep idefics2 external when bundling`,
      );
    }
  }
}

const root = findRoot(path.dirname(fileURLToPath(import.meta.url)));

/** The installed package's root folder (the one holding package.json and python/). @internal */
export function packageRoot(): string {
  return root;
}

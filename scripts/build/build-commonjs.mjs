#!/usr/bin/env node
// The CommonJS build (dist/cjs/), beside tsc's ES module build (dist/): for `require("idefics2")` on every Node the
// package supports (require of an ES module is unflagged only from Node 20.19) and for tslab, which compiles
// notebook cells to CommonJS. esbuild bundles both entries into one file, with execa inside it, since execa 9 ships
// only as an ES module; zod and sharp stay outside (users share zod's classes; sharp is native), and so do the
// server's dependencies. One bundle, so `idefics2` and `idefics2/notebook` share their modules (one ImageError
// class, not one per entry); each entry's index.js hands out its part. tsc writes the declarations again under
// dist/cjs/, where dist/cjs/package.json makes TypeScript read them as CommonJS.
import { execFileSync } from "node:child_process";
import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
const out = path.join(root, "dist", "cjs");
const entries = { sdk: "index", notebook: "notebook/index" };

// dist/cjs/ is this script's alone: start it empty, so no file of an older build ships.
await rm(out, { recursive: true, force: true });

await build({
  absWorkingDir: root,
  stdin: {
    contents: Object.entries(entries)
      .map(([name, entry]) => `export * as ${name} from "./src/${entry}.js";`)
      .join("\n"),
    resolveDir: root,
    sourcefile: "entries.ts",
    loader: "ts",
  },
  outfile: path.join(out, "bundle.js"),
  bundle: true,
  format: "cjs",
  platform: "node",
  target: "node20.9",
  // The server's runtime dependencies (Hono, its Node adapter, prom-client) ship CommonJS builds of their own.
  external: ["sharp", "zod", "hono", "@hono/node-server", "prom-client"],
  // `import.meta.url` does not exist in CommonJS: the bundle answers it with its own file's URL.
  define: { "import.meta.url": "__idefics2ModuleUrl" },
  banner: { js: 'const __idefics2ModuleUrl = require("node:url").pathToFileURL(__filename).href;' },
  logLevel: "warning",
});
for (const [name, entry] of Object.entries(entries)) {
  const file = path.join(out, `${entry}.js`);
  await mkdir(path.dirname(file), { recursive: true });
  const bundle = path.relative(path.dirname(file), path.join(out, "bundle.js")).split(path.sep).join("/");
  await writeFile(file, `"use strict";\nmodule.exports = require("${bundle.startsWith(".") ? bundle : `./${bundle}`}").${name};\n`);
}
await writeFile(path.join(out, "package.json"), `${JSON.stringify({ type: "commonjs" }, null, 2)}\n`);
execFileSync(
  process.execPath,
  [path.join(root, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.build.json", "--emitDeclarationOnly", "--outDir", out],
  { cwd: root, stdio: "inherit" },
);

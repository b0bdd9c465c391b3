#!/usr/bin/env node
// The CommonJS build (dist/cjs/), beside tsc's ES module build (dist/): for `require("idefics2")` on every Node the
// package supports (require of an ES module is unflagged only from Node 20.19) and for tslab, which compiles
// notebook cells to CommonJS. esbuild bundles each entry with execa inside it, since execa 9 ships only as an ES
// module; zod and sharp stay outside (users share zod's classes; sharp is native). tsc writes the declarations
// again under dist/cjs/, where dist/cjs/package.json makes TypeScript read them as CommonJS.
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { execFileSync } from "node:child_process";

const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
const out = path.join(root, "dist", "cjs");
const entries = { index: "src/index.ts", "notebook/index": "src/notebook/index.ts" };

await build({
  absWorkingDir: root,
  entryPoints: entries,
  outdir: out,
  bundle: true,
  format: "cjs",
  platform: "node",
  target: "node20.9",
  external: ["sharp", "zod"],
  // `import.meta.url` does not exist in CommonJS: each bundle answers it with its own file's URL.
  define: { "import.meta.url": "__idefics2ModuleUrl" },
  banner: { js: 'const __idefics2ModuleUrl = require("node:url").pathToFileURL(__filename).href;' },
  logLevel: "warning",
});
await writeFile(path.join(out, "package.json"), `${JSON.stringify({ type: "commonjs" }, null, 2)}\n`);
execFileSync(
  process.execPath,
  [path.join(root, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.build.json", "--emitDeclarationOnly", "--outDir", out],
  { cwd: root, stdio: "inherit" },
);

#!/usr/bin/env node
// The package as consumers get it, checked by the ecosystem's tools: @arethetypeswrong/cli on the packed tarball
// (types and JavaScript agree for node10, node16 from CommonJS and from ES modules, and bundlers) and publint
// (exports, files, fields). Run after `npm run build`; exits with the first failure's code.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
const bin = (name) => path.join(root, "node_modules", ".bin", name);
const folder = mkdtempSync(path.join(tmpdir(), "idefics2-check-package-"));
try {
  // The build is current: pack it as it is, without prepack building it again.
  execFileSync("npm", ["pack", "--ignore-scripts", "--pack-destination", folder], { cwd: root, stdio: "ignore" });
  const tarball = path.join(folder, readdirSync(folder).find((name) => name.endsWith(".tgz")) ?? "missing.tgz");
  for (const [tool, args] of [
    [bin("attw"), [tarball, "--format", "table-flipped"]],
    [bin("publint"), ["--strict"]],
  ]) {
    const done = spawnSync(tool, args, { cwd: root, stdio: "inherit" });
    if (done.error || done.status !== 0) process.exit(done.status || 1);
  }
} finally {
  rmSync(folder, { recursive: true, force: true });
}

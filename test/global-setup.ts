import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { ensurePythonEnvironment } from "../src/runtime/python-environment.js";

// One interpreter for the whole suite: the managed environment (created once, reused after), or IDEFICS2_PYTHON.
// One packed tarball of the built package, for the tests that install it as a user would (package, notebook).
export default async function setup(project: TestProject): Promise<void> {
  const environment = await ensurePythonEnvironment({ dev: true });
  project.provide("python", environment.python);
  project.provide("tarball", packBuiltPackage());
}

function packBuiltPackage(): string {
  if (!existsSync(join("dist", "cjs", "index.js"))) throw new Error("test setup: dist/ is not built; run `npm run build` first");
  const folder = mkdtempSync(join(tmpdir(), "idefics2-pack-"));
  // The build is current (npm test builds first): pack it as it is, without running prepack's build again.
  execFileSync("npm", ["pack", "--ignore-scripts", "--pack-destination", folder], { stdio: "ignore" });
  const [tarball] = readdirSync(folder).filter((name) => name.endsWith(".tgz"));
  if (tarball === undefined) throw new Error(`test setup: npm pack wrote no tarball in ${folder}`);
  return join(folder, tarball);
}

declare module "vitest" {
  export interface ProvidedContext {
    python: string;
    tarball: string;
  }
}

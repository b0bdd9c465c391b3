import { execFile } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { inject } from "vitest";

const run = promisify(execFile);

/** A fresh app folder with the packed package installed as a user installs it; npm's own output is kept. */
export interface PackedApp {
  folder: string;
  installOutput: string;
}

/** Creates an empty npm app and installs the suite's packed tarball into it (see test/global-setup.ts). */
export async function installPackedApp(): Promise<PackedApp> {
  const folder = await mkdtemp(join(tmpdir(), "idefics2-app-"));
  await writeFile(join(folder, "package.json"), `${JSON.stringify({ name: "app", version: "1.0.0", private: true }, null, 2)}\n`);
  const { stdout, stderr } = await run("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", inject("tarball")], {
    cwd: folder,
  });
  return { folder, installOutput: `${stdout}${stderr}` };
}

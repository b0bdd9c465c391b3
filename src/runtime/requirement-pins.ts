import { readFileSync } from "node:fs";
import path from "node:path";
import { packageRoot } from "./package-root.js";

/** The requirements file of the managed environment: runtime, or runtime plus test tools. @internal */
export function requirementsFile(dev: boolean): string {
  return path.join(packageRoot(), "python", dev ? "requirements-dev.txt" : "requirements.txt");
}

/** python/requirements-pip.txt: the pip set-up upgrades an environment to before installing into it. @internal */
export function pipRequirementsFile(): string {
  return path.join(packageRoot(), "python", "requirements-pip.txt");
}

// Pins from python/requirements.txt by lower-case name ("torch" → "torch==2.13.0"), for fix messages.
/** Returns the pinned requirement for `name`, or the bare name when it is not pinned there. @internal */
export function requirementPin(name: string): string {
  let text = "";
  try {
    text = readFileSync(requirementsFile(false), "utf8");
  } catch {
    return name;
  }
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*/, "").trim();
    const match = /^([A-Za-z0-9_.-]+)\s*([=<>!~].*)?$/.exec(line);
    if (match?.[1]?.toLowerCase() === name.toLowerCase()) return line.replace(/\s+/g, "");
  }
  return name;
}

import { createHash } from "node:crypto";

export interface EnvironmentHashInput {
  /** The contents of python/requirements.txt (and any file it reads), in order. */
  requirements: readonly string[];
  /** The base interpreter's version ("3.11.7"): a venv is tied to the Python that made it. */
  basePythonVersion: string;
  platform?: string;
}

/**
 * Names a managed environment by its runtime requirements and base Python: change any input and a new
 * environment is made. The dev extras (requirements-dev.txt) are not part of it: they are added into the
 * same environment. @internal
 */
export function environmentHash(input: EnvironmentHashInput): string {
  const hash = createHash("sha256");
  for (const text of input.requirements) hash.update(`${text.length}:${text}\n`);
  // "dev=false" is a constant kept from when dev made a separate environment: runtime environments made
  // then keep their name and are reused.
  hash.update(`dev=false\npython=${input.basePythonVersion}\nplatform=${input.platform ?? `${process.platform}-${process.arch}`}\n`);
  return hash.digest("hex").slice(0, 16);
}

/** The sha256 of a requirements file's text, recorded in the dev marker. @internal */
export function requirementsDigest(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

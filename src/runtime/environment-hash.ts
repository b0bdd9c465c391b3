import { createHash } from "node:crypto";

export interface EnvironmentHashInput {
  /** The contents of every requirements file the install reads, in order. */
  requirements: readonly string[];
  dev: boolean;
  /** The base interpreter's version ("3.11.7"): a venv is tied to the Python that made it. */
  basePythonVersion: string;
  platform?: string;
}

/** Names a managed environment by what went into it: change any input and a new environment is made. @internal */
export function environmentHash(input: EnvironmentHashInput): string {
  const hash = createHash("sha256");
  for (const text of input.requirements) hash.update(`${text.length}:${text}\n`);
  hash.update(`dev=${input.dev}\npython=${input.basePythonVersion}\nplatform=${input.platform ?? `${process.platform}-${process.arch}`}\n`);
  return hash.digest("hex").slice(0, 16);
}

import type { TestProject } from "vitest/node";
import { ensurePythonEnvironment } from "../src/runtime/python-environment.js";

// One interpreter for the whole suite: the managed environment (created once, reused after), or IDEFICS2_PYTHON.
export default async function setup(project: TestProject): Promise<void> {
  const environment = await ensurePythonEnvironment({ dev: true });
  project.provide("python", environment.python);
}

declare module "vitest" {
  export interface ProvidedContext {
    python: string;
  }
}

import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import type { Messages } from "../../src/messages.js";
import { testPython } from "./python.js";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

export interface ReferenceOutput {
  tokenIds: number[];
  text: string;
  fullText: string;
}

export interface ReferenceRun {
  model: string;
  messages: Messages;
  images: string[];
  quantization: "none" | "8bit" | "4bit";
  maxNewTokens: number;
  imageSplitting?: boolean;
}

/** Runs scripts/reference/reference.py (the blog's program) and returns what it printed. */
export async function runReference(run: ReferenceRun): Promise<ReferenceOutput> {
  const folder = await mkdtemp(join(tmpdir(), "idefics2-reference-"));
  const messagesFile = join(folder, "messages.json");
  await writeFile(messagesFile, JSON.stringify(run.messages));
  const args = [
    join(repoRoot, "scripts", "reference", "reference.py"),
    "--model",
    run.model,
    "--messages",
    messagesFile,
    ...run.images.flatMap((image) => ["--image", image]),
    "--quantization",
    run.quantization,
    "--max-new-tokens",
    String(run.maxNewTokens),
    ...(run.imageSplitting === false ? ["--no-image-splitting"] : []),
  ];
  const { stdout } = await execa(testPython(), args, { env: { PYTHONWARNINGS: "ignore" } });
  return JSON.parse(stdout) as ReferenceOutput;
}

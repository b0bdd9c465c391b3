import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { testPython } from "../helpers/python.js";

export type PilResult = { width: number; height: number; rgb: Buffer } | { error: string };

const script = fileURLToPath(new URL("./pil-reference.py", import.meta.url));

/** Adds PIL-made fixtures to `folder`, then reads every file there with `load_image`, all in one Python process. */
export async function pilReference(folder: string): Promise<Map<string, PilResult>> {
  const { stdout } = await promisify(execFile)(testPython(), [script, folder], { maxBuffer: 512 * 1024 * 1024 });
  const parsed = JSON.parse(stdout) as Record<string, { width: number; height: number; rgb: string } | { error: string }>;
  return new Map(
    Object.entries(parsed).map(([name, result]) => [
      name,
      "error" in result ? result : { ...result, rgb: Buffer.from(result.rgb, "base64") },
    ]),
  );
}

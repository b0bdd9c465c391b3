import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { testPython } from "../helpers/python.js";
import { repoRoot } from "../helpers/reference.js";
import { stillRunning } from "./process-state.js";

// A program whose call failed before it reached the worker (too large to send, a bad signal) and that never calls
// close() still exits at once, and its worker goes with it: a failed call leaves nothing holding the worker.
// Runs the built package (dist/), as a user's program would.

const script = fileURLToPath(new URL("../fixtures/workers/scripted_worker.py", import.meta.url));

describe("a program that gets a refused call and forgets close()", { timeout: 20_000 }, () => {
  it.each([
    ["a request over 16 MiB", `worker.request("generate", params("x".repeat(17 * 2 ** 20)), { timeoutMs: 60_000 })`],
    ["a signal that is not an AbortSignal", `worker.request("ping", {}, { signal: { aborted: false }, timeoutMs: 60_000 })`],
  ])("%s: the program exits within 3 s and the worker has ended", async (_what, call) => {
    const program = `
      import { WorkerProcess } from ${JSON.stringify(join(repoRoot, "dist", "worker", "worker-process.js"))};
      const params = (text) => ({ messages: [{ role: "user", content: [{ type: "text", text }] }], images: [],
        options: { maxNewTokens: 5 }, stream: false });
      const worker = await WorkerProcess.start({ file: ${JSON.stringify(testPython())}, args: [${JSON.stringify(script)}],
        env: { FIXTURE_MODE: "normal", PATH: process.env.PATH ?? "" } });
      const error = await ${call}.catch((caught) => caught);
      console.log(JSON.stringify({ pid: worker.pid, name: error.name }));
    `;
    const child = execa(process.execPath, ["--input-type=module", "-e", program], { timeout: 15_000, reject: false });
    let printedAt = 0;
    child.stdout?.once("data", () => (printedAt = performance.now()));
    const result = await child;
    const exitedAfter = performance.now() - printedAt;
    expect(result.exitCode, result.stderr).toBe(0);
    const { pid, name } = JSON.parse(result.stdout) as { pid: number; name: string };
    expect(name).toMatch(/^(ProtocolError|InvalidInputError)$/);
    expect(exitedAfter).toBeLessThan(3000);
    expect(await stillRunning([pid], 2000)).toEqual([]);
  });
});

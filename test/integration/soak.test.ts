import { describe, expect, it } from "vitest";
// The soak itself lives in scripts/soak/soak.mjs (run it with defaults for the full 1,000 + 100 requests and 3 kills).
// @ts-expect-error: a plain ES module without declarations, imported from the built package.
import { runSoak } from "../../scripts/soak/soak.mjs";
import { testPython } from "../helpers/python.js";

interface SoakResult {
  requests: number;
  successes: number;
  aborts: number;
  crashes: number;
  other: string[];
  doubleSettled: number;
  kills: number;
  restarts: number;
  memory: { phase: string; nodeMb: number; pythonMb: number | null }[];
}

// Bounds for the short run; the full run's figures are in the README's reliability section.
const NODE_RSS_BOUND_MB = 600;
const PYTHON_RSS_BOUND_MB = 1500;

describe("soak (short)", () => {
  it("settles every request exactly once through aborts and worker kills, with bounded memory", async () => {
    const result = (await runSoak({ sequential: 120, concurrent: 40, kills: 2, python: testPython() })) as SoakResult;
    expect(result.other).toEqual([]);
    expect(result.doubleSettled).toBe(0);
    expect(result.successes + result.aborts + result.crashes).toBe(result.requests);
    expect(result.requests).toBe(120 + 40 + 1);
    expect(result.successes).toBeGreaterThanOrEqual(121);
    expect(result.kills).toBeGreaterThan(0);
    expect(result.crashes).toBeGreaterThan(0);
    expect(result.restarts).toBe(result.kills);
    for (const sample of result.memory) {
      expect(sample.nodeMb, sample.phase).toBeLessThan(NODE_RSS_BOUND_MB);
      if (sample.pythonMb !== null) expect(sample.pythonMb, sample.phase).toBeLessThan(PYTHON_RSS_BOUND_MB);
    }
  }, 300_000);
});

import { describe, expect, it } from "vitest";
import { judgeTeacherForcing, NOISE_FACTOR, NOISE_FLOOR, type TeacherForcedStep } from "../../src/parity/judge-teacher-forcing.js";

// A step where both paths pick `token`; margin and errors as given.
function step(overrides: Partial<TeacherForcedStep> = {}): TeacherForcedStep {
  return { referenceTop1: 7, referenceMargin: 5, fastTop1: 7, fastMaxAbsErr: 0.02, fastRelErr: 0.001, noiseMaxAbsErr: 0.03, ...overrides };
}

describe("judgeTeacherForcing (the method of scripts/gpu/gpu_parity.py)", () => {
  it("passes logits within 1.5 × the largest kernel noise of any step, with top-1 agreement on decisive steps", () => {
    const steps = [step(), step({ noiseMaxAbsErr: 0.0625, fastMaxAbsErr: 0.09 }), step({ fastMaxAbsErr: 0.03125 })];
    const judged = judgeTeacherForcing(steps);
    expect(judged).toMatchObject({
      ok: true,
      steps: 3,
      noise: 0.0625,
      tolerance: 0.0625 * NOISE_FACTOR,
      maxAbsErr: 0.09,
      maxAbsErrStep: 1,
      withinNoise: true,
      finite: true,
      decisiveSteps: 3,
      decisiveAgreements: 3,
      firstDisagreement: null,
      agreementsAllSteps: 3,
    });
  });

  it("fails logits just above the tolerance and passes them exactly at it", () => {
    const noise = 0.04;
    expect(judgeTeacherForcing([step({ noiseMaxAbsErr: noise, fastMaxAbsErr: noise * NOISE_FACTOR })]).ok).toBe(true);
    const above = judgeTeacherForcing([step({ noiseMaxAbsErr: noise, fastMaxAbsErr: noise * NOISE_FACTOR * 1.001 })]);
    expect(above).toMatchObject({ ok: false, withinNoise: false, firstDisagreement: null });
  });

  it("uses a floor of 1e-6 for the noise when the two kernels agree exactly", () => {
    const exact = [step({ noiseMaxAbsErr: 0, fastMaxAbsErr: 1.4e-6 })];
    expect(judgeTeacherForcing(exact)).toMatchObject({ ok: true, noise: 0, tolerance: NOISE_FLOOR * NOISE_FACTOR });
    expect(judgeTeacherForcing([step({ noiseMaxAbsErr: 0, fastMaxAbsErr: 1.6e-6 })]).ok).toBe(false);
  });

  it("ignores a different top-1 on a near-tie (margin within the noise) and fails one on a decisive step", () => {
    const nearTie = step({ referenceMargin: 0.02, fastTop1: 9 });
    const decisive = step({ referenceMargin: 0.5, referenceTop1: 412, fastTop1: 97 });
    const tieOnly = judgeTeacherForcing([step(), nearTie, step()]);
    expect(tieOnly).toMatchObject({ ok: true, decisiveSteps: 2, decisiveAgreements: 2, agreementsAllSteps: 2 });
    const both = judgeTeacherForcing([step(), nearTie, decisive, step({ referenceMargin: 3, fastTop1: 8 })]);
    expect(both).toMatchObject({
      ok: false,
      withinNoise: true,
      decisiveSteps: 3,
      decisiveAgreements: 1,
      firstDisagreement: { step: 2, reference: 412, sdk: 97 },
    });
  });

  it("counts a margin equal to the noise as not decisive (strictly greater, as gpu_parity.py)", () => {
    const judged = judgeTeacherForcing([step({ noiseMaxAbsErr: 0.0625, referenceMargin: 0.0625, fastTop1: 3 })]);
    expect(judged).toMatchObject({ ok: true, decisiveSteps: 0, agreementsAllSteps: 0 });
  });

  it("fails on a NaN figure and on no steps at all", () => {
    expect(judgeTeacherForcing([step(), step({ fastMaxAbsErr: Number.NaN })])).toMatchObject({
      ok: false,
      finite: false,
      withinNoise: false,
    });
    expect(judgeTeacherForcing([step({ noiseMaxAbsErr: Number.NaN })])).toMatchObject({ ok: false, finite: false });
    expect(judgeTeacherForcing([])).toMatchObject({ ok: false, steps: 0 });
  });

  it("judges figures measured on an H200 (embedded model in bfloat16 and in float32, the fast decoder with CUDA graphs)", () => {
    // From python -m idefics2_worker.engine.teacher_forced_parity on the demo conversation (rounded to what matters).
    const bf16 = [
      [12.72, 0, 0.03125],
      [13.52, 0.03125, 0.03125],
      [13.11, 0.03125, 0.03125],
      [7.09, 0.03125, 0.0625],
      [0.0625, 0.03125, 0.03125],
      [13.95, 0.03125, 0.03125],
    ].map(([margin, error, noise]) => step({ referenceMargin: margin, fastMaxAbsErr: error, noiseMaxAbsErr: noise }));
    expect(judgeTeacherForcing(bf16)).toMatchObject({ ok: true, noise: 0.0625, decisiveSteps: 5 });
    // float32: attention kernels agree to 1.9e-6, the fast path differs by 3.3e-4 at one step: outside the noise.
    const f32 = bf16.map((each, index) => ({ ...each, noiseMaxAbsErr: 1.9e-6, fastMaxAbsErr: index === 3 ? 3.34e-4 : 5e-6 }));
    expect(judgeTeacherForcing(f32)).toMatchObject({ ok: false, withinNoise: false, maxAbsErrStep: 3, firstDisagreement: null });
  });
});

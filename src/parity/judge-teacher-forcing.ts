/** One decode step of the teacher-forced run, as python -m idefics2_worker.engine.teacher_forced_parity prints it. */
export interface TeacherForcedStep {
  /** The reference's most likely next token (default attention). */
  referenceTop1: number;
  /** The reference's top-1 logit minus its top-2 logit. */
  referenceMargin: number;
  /** The fast decoder's most likely next token, fed the same tokens. */
  fastTop1: number;
  /** Largest absolute difference between the fast decoder's logits and the reference's at this step. */
  fastMaxAbsErr: number;
  /** ‖fast − reference‖ / ‖reference‖ at this step. */
  fastRelErr: number;
  /** Largest absolute difference between another valid kernel's logits (PyTorch's math attention) and the reference's. */
  noiseMaxAbsErr: number;
}

/** The verdict on the fast decoder's teacher-forced logits, by the method of scripts/gpu/gpu_parity.py. */
export interface LogitsComparison {
  ok: boolean;
  steps: number;
  /** The precision's noise: the largest spread, over all steps, between the math kernel and the reference. */
  noise: number;
  /** What the fast decoder may differ by: max(noise, 1e-6) × 1.5. */
  tolerance: number;
  /** The fast decoder's largest logit difference from the reference, and the step where it occurs. */
  maxAbsErr: number;
  maxAbsErrStep: number;
  maxRelErr: number;
  withinNoise: boolean;
  /** Every figure was a finite number (a NaN or infinite logit fails the check). */
  finite: boolean;
  /** Steps whose top-1/top-2 margin exceeds the noise: there the top-1 token must agree. */
  decisiveSteps: number;
  /** Decisive steps where the fast decoder's top-1 is the reference's. */
  decisiveAgreements: number;
  /** The first decisive step where the top-1 tokens differ; null when all agree. */
  firstDisagreement: { step: number; reference: number; sdk: number } | null;
  /** Steps, decisive or not, where the top-1 tokens agree. */
  agreementsAllSteps: number;
}

/** How far above the noise the fast decoder may be, and the least noise assumed (both gpu_parity.py's). */
export const NOISE_FACTOR = 1.5;
export const NOISE_FLOOR = 1e-6;

/**
 * Within noise: the fast decoder's logits differ from the reference's by no more than 1.5 × the spread between
 * two kernels the worker does not use, and its top-1 agrees wherever the reference's margin exceeds that spread.
 */
export function judgeTeacherForcing(steps: readonly TeacherForcedStep[]): LogitsComparison {
  const noise = Math.max(0, ...steps.map((step) => step.noiseMaxAbsErr));
  const tolerance = Math.max(noise, NOISE_FLOOR) * NOISE_FACTOR;
  let maxAbsErr = 0;
  let maxAbsErrStep = 0;
  let maxRelErr = 0;
  let decisiveSteps = 0;
  let decisiveAgreements = 0;
  let agreementsAllSteps = 0;
  let firstDisagreement: LogitsComparison["firstDisagreement"] = null;
  steps.forEach((step, index) => {
    if (step.fastMaxAbsErr > maxAbsErr) {
      maxAbsErr = step.fastMaxAbsErr;
      maxAbsErrStep = index;
    }
    maxRelErr = Math.max(maxRelErr, step.fastRelErr);
    const agrees = step.fastTop1 === step.referenceTop1;
    if (agrees) agreementsAllSteps++;
    if (step.referenceMargin > noise) {
      decisiveSteps++;
      if (agrees) decisiveAgreements++;
      else firstDisagreement ??= { step: index, reference: step.referenceTop1, sdk: step.fastTop1 };
    }
  });
  const finite = steps.every((step) =>
    [step.referenceMargin, step.fastMaxAbsErr, step.fastRelErr, step.noiseMaxAbsErr].every(Number.isFinite),
  );
  const withinNoise = finite && maxAbsErr <= tolerance;
  return {
    ok: steps.length > 0 && finite && withinNoise && firstDisagreement === null,
    steps: steps.length,
    noise,
    tolerance,
    maxAbsErr,
    maxAbsErrStep,
    maxRelErr,
    withinNoise,
    finite,
    decisiveSteps,
    decisiveAgreements,
    firstDisagreement,
    agreementsAllSteps,
  };
}

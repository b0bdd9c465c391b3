"""The teacher-forced figures `idefics2 parity` judges for the fast decoder: per step, from three logit matrices."""

from __future__ import annotations

import json

import torch

from idefics2_worker.engine.teacher_forced_parity import step_figures


def test_each_step_reports_the_reference_top1_and_margin_the_fast_top1_and_both_errors() -> None:
    reference = torch.tensor([[1.0, 5.0, 4.5, 0.0], [3.0, 0.0, 0.0, 2.0]])
    fast = torch.tensor([[1.0, 5.0, 4.75, 0.0], [3.0, 0.0, 0.0, 3.5]])
    noise = torch.tensor([[1.0, 5.125, 4.5, 0.0], [3.0, 0.0, 0.0, 2.0]])
    steps = step_figures(reference, fast, noise)
    assert steps[0] == {
        "referenceTop1": 1,
        "referenceMargin": 0.5,
        "fastTop1": 1,
        "fastMaxAbsErr": 0.25,
        "fastRelErr": steps[0]["fastRelErr"],
        "noiseMaxAbsErr": 0.125,
    }
    assert abs(steps[0]["fastRelErr"] - 0.25 / reference[0].norm().item()) < 1e-7
    assert steps[1]["referenceTop1"] == 0
    assert steps[1]["fastTop1"] == 3
    assert steps[1]["fastMaxAbsErr"] == 1.5
    assert steps[1]["noiseMaxAbsErr"] == 0.0


def test_a_non_finite_figure_is_reported_as_null_so_the_output_stays_json() -> None:
    reference = torch.tensor([[1.0, 2.0, 0.0]])
    fast = torch.tensor([[float("nan"), 2.0, 0.0]])
    steps = step_figures(reference, fast, reference.clone())
    assert steps[0]["fastMaxAbsErr"] is None
    assert steps[0]["fastRelErr"] is None
    json.dumps(steps, allow_nan=False)

"""Pure schedules on hand-computed values: DεS switch and ε ramp, OFA phase boundaries, cosine lr."""

from __future__ import annotations

import math

import pytest

from ws_train.schedules import (
    cosine_lr,
    delayed_shrinking_schedule,
    epsilon_beta,
    epsilon_ramp,
    progressive_shrinking_phases,
    warmup_switch_epoch,
    warmup_switch_step,
)


def test_warmup_switch_epoch_and_step():
    assert warmup_switch_epoch(270, 0.5) == 135.0
    assert warmup_switch_epoch(200, 0.75) == 150.0
    assert warmup_switch_epoch(10, 0.25) == 2.5
    assert warmup_switch_step(1000, 0.5) == 500
    assert warmup_switch_step(8, 0.5) == 4
    assert warmup_switch_step(10, 0.25) == 2  # round(2.5) -> 2 (banker's rounding of Python's round)
    assert warmup_switch_step(7, 0.0) == 0


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), "0.5", True])
def test_warmup_fraction_out_of_range_names_allowed_and_got(bad):
    with pytest.raises(ValueError, match=r"warmup_fraction must be in \[0, 1\), got"):
        warmup_switch_step(100, bad)


def test_delayed_schedule_paper_recipe():
    # DεpS ImageNet: 270 epochs; with 10 steps/epoch the switch is at epoch 135 and the ramp lasts 5 epochs
    s = delayed_shrinking_schedule(2700, 10, 0.5)
    assert (s.switch_step, s.ramp_steps, s.full_step) == (1350, 50, 1399)


def test_delayed_schedule_default_ramp_is_capped_for_short_runs():
    # 4 epochs × 10 steps: 5 epochs would be 50 steps; the cap is 10% of 40 = 4 steps
    s = delayed_shrinking_schedule(40, 10, 0.5)
    assert (s.switch_step, s.ramp_steps) == (20, 4)


def test_delayed_schedule_explicit_ramps():
    assert delayed_shrinking_schedule(40, 10, 0.5, ramp_epochs=1.5).ramp_steps == 15
    assert delayed_shrinking_schedule(40, 10, 0.5, ramp_fraction=0.25).ramp_steps == 10
    assert delayed_shrinking_schedule(40, 10, 0.5, ramp_epochs=0).ramp_steps == 0


def test_delayed_schedule_errors():
    with pytest.raises(ValueError, match="not both"):
        delayed_shrinking_schedule(40, 10, 0.5, ramp_epochs=1, ramp_fraction=0.1)
    with pytest.raises(ValueError, match=r"allowed at most 20 steps \(ramp_epochs <= 2 or ramp_fraction <= 0.5\)"):
        delayed_shrinking_schedule(40, 10, 0.5, ramp_epochs=5)
    with pytest.raises(ValueError, match=r"ramp_fraction must be in \[0, 1\], got 1.5"):
        delayed_shrinking_schedule(40, 10, 0.5, ramp_fraction=1.5)
    with pytest.raises(ValueError, match="ramp_epochs must be a number >= 0, got -1"):
        delayed_shrinking_schedule(40, 10, 0.5, ramp_epochs=-1)


def test_epsilon_ramp_values():
    assert [epsilon_ramp(t, 10, 4) for t in (0, 9, 10, 11, 12, 13, 14, 100)] == [0, 0, 0.25, 0.5, 0.75, 1, 1, 1]
    assert [epsilon_ramp(t, 10, 0) for t in (9, 10)] == [0.0, 1.0]


def test_epsilon_beta_linear_and_lr_matched():
    assert epsilon_beta(11, 10, 4) == 0.5
    assert epsilon_beta(11, 10, 4, multiplier=2.0) == 1.0
    # paper code: effective lr β·η(t) = progress · η(full): 0.5 · 0.1 / 0.2
    assert epsilon_beta(11, 10, 4, lr=0.2, lr_at_full=0.1) == pytest.approx(0.25)
    assert epsilon_beta(13, 10, 4, lr=0.2, lr_at_full=0.1) == 1.0  # ramp done: β = multiplier
    assert epsilon_beta(9, 10, 4, lr=0.2, lr_at_full=0.1) == 0.0  # warm-up: SubNets off


def test_ofa_phase_boundaries_paper_epochs():
    assert progressive_shrinking_phases(605) == [(0, 180), (180, 305), (305, 330), (330, 455), (455, 480), (480, 605)]


def test_ofa_phase_boundaries_short_run():
    # 10 × cumulative / 605 = 2.98, 5.04, 5.45, 7.52, 7.93, 10 -> 3, 5, 5, 8, 8, 10
    assert progressive_shrinking_phases(10) == [(0, 3), (3, 5), (5, 5), (5, 8), (8, 8), (8, 10)]
    assert progressive_shrinking_phases(6, [1] * 6) == [(i, i + 1) for i in range(6)]
    with pytest.raises(ValueError, match="non-negative numbers with a positive sum"):
        progressive_shrinking_phases(10, [0, 0])


def test_cosine_lr_values():
    assert cosine_lr(0, 100, 0.1) == pytest.approx(0.1)
    assert cosine_lr(50, 100, 0.1) == pytest.approx(0.05)
    assert cosine_lr(100, 100, 0.1) == pytest.approx(0.0)
    assert cosine_lr(25, 100, 0.1, min_lr=0.02) == pytest.approx(0.02 + 0.08 * (1 + math.cos(math.pi / 4)) / 2)
    # linear warm-up over 4 steps, then cosine over the remaining 96
    assert [cosine_lr(t, 100, 0.1, warmup_steps=4) for t in range(4)] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert cosine_lr(52, 100, 0.1, warmup_steps=4) == pytest.approx(0.05)

"""Pure schedules on hand-computed values: DεS switch and ε ramp, OFA phases and their lr, BigNAS lr, cosine lr."""

from __future__ import annotations

import math

import pytest

from ws_train.schedules import (
    bignas_lr,
    cosine_lr,
    delayed_shrinking_schedule,
    epsilon_beta,
    epsilon_ramp,
    progressive_shrinking_lr,
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
    # DεpS ImageNet: 270 epochs; with 10 steps/epoch T_w = 1350 (epoch 135) and the 5-epoch ramp S = 50 steps
    # runs over [T_w − S, T_w) = [1300, 1350): it ends at T_w, it does not start there
    s = delayed_shrinking_schedule(2700, 10, 0.5)
    assert (s.switch_step, s.ramp_steps, s.ramp_start, s.full_step) == (1350, 50, 1300, 1350)
    # the paper's own numbers: T_w = 150 of 270 epochs, S = 5 -> SubNets join at epoch 145
    s = delayed_shrinking_schedule(270, 1, 150 / 270)
    assert (s.ramp_start, s.switch_step) == (145, 150)


def test_delayed_schedule_default_ramp_is_5_epochs_not_a_fraction_of_the_run():
    # 40 epochs × 10 steps: T_w = 200, the default ramp is DεpS's 5 epochs = 50 steps (no 10%-of-run cap: 40)
    s = delayed_shrinking_schedule(400, 10, 0.5)
    assert (s.ramp_start, s.switch_step, s.ramp_steps) == (150, 200, 50)


def test_delayed_schedule_default_ramp_is_cut_to_t_w_in_short_runs():
    # 4 epochs × 10 steps: T_w = 20 < 5 epochs = 50 steps: the ramp covers the whole warm-up, [0, 20)
    s = delayed_shrinking_schedule(40, 10, 0.5)
    assert (s.ramp_start, s.switch_step, s.ramp_steps) == (0, 20, 20)


def test_delayed_schedule_explicit_ramps():
    assert delayed_shrinking_schedule(40, 10, 0.5, ramp_epochs=1.5).ramp_steps == 15
    assert delayed_shrinking_schedule(40, 10, 0.5, ramp_fraction=0.25).ramp_steps == 10
    s = delayed_shrinking_schedule(40, 10, 0.5, ramp_epochs=0)
    assert (s.ramp_steps, s.ramp_start, s.switch_step) == (0, 20, 20)


def test_delayed_schedule_errors():
    with pytest.raises(ValueError, match="not both"):
        delayed_shrinking_schedule(40, 10, 0.5, ramp_epochs=1, ramp_fraction=0.1)
    # the ramp ends at T_w = 20, so it may be at most 20 steps long
    with pytest.raises(ValueError, match=r"does not fit before the switch at step 20 .*allowed at most 20 steps "
                                         r"\(ramp_epochs <= 2 or ramp_fraction <= 0.5\)"):
        delayed_shrinking_schedule(40, 10, 0.5, ramp_epochs=2.1)
    with pytest.raises(ValueError, match=r"ramp_fraction must be in \[0, 1\], got 1.5"):
        delayed_shrinking_schedule(40, 10, 0.5, ramp_fraction=1.5)
    with pytest.raises(ValueError, match="ramp_epochs must be a number >= 0, got -1"):
        delayed_shrinking_schedule(40, 10, 0.5, ramp_epochs=-1)


def test_epsilon_ramp_values():
    # T_w = 14, S = 4: the ramp is [10, 14); 1/S at T_w − S, 1 at T_w − 1 and from T_w on
    assert [epsilon_ramp(t, 14, 4) for t in (0, 9, 10, 11, 12, 13, 14, 100)] == [0, 0, 0.25, 0.5, 0.75, 1, 1, 1]
    assert [epsilon_ramp(t, 10, 0) for t in (9, 10)] == [0.0, 1.0]


def test_epsilon_values_at_t_w_minus_s_and_at_t_w():
    # DεpS recipe in steps (10 per epoch): T_w = 1350, S = 50
    s = delayed_shrinking_schedule(2700, 10, 0.5)
    beta = [epsilon_beta(t, s.switch_step, s.ramp_steps) for t in (1299, 1300, 1349, 1350)]
    assert beta == pytest.approx([0.0, 1 / 50, 1.0, 1.0])
    # the paper's lr-matched form: β·η(t) = (t − (T_w − S) + 1) / S × η(T_w); take η(T_w) = 0.05, η(t) = 0.1
    assert epsilon_beta(1299, 1350, 50, lr=0.1, lr_at_full=0.05) == 0.0  # FM-warmup: SubNets off
    assert epsilon_beta(1300, 1350, 50, lr=0.1, lr_at_full=0.05) == pytest.approx(0.01)  # 1/50 × 0.05 / 0.1
    assert epsilon_beta(1349, 1350, 50, lr=0.1, lr_at_full=0.05) == pytest.approx(0.5)  # 50/50 × 0.05 / 0.1
    assert epsilon_beta(1350, 1350, 50, lr=0.1, lr_at_full=0.05) == 1.0  # from T_w: β = multiplier


def test_epsilon_beta_linear_and_lr_matched():
    assert epsilon_beta(11, 14, 4) == 0.5
    assert epsilon_beta(11, 14, 4, multiplier=2.0) == 1.0
    # paper code: effective lr β·η(t) = progress · η(T_w): 0.5 · 0.1 / 0.2
    assert epsilon_beta(11, 14, 4, lr=0.2, lr_at_full=0.1) == pytest.approx(0.25)
    assert epsilon_beta(14, 14, 4, lr=0.2, lr_at_full=0.1) == 1.0  # ramp done: β = multiplier
    assert epsilon_beta(9, 14, 4, lr=0.2, lr_at_full=0.1) == 0.0  # warm-up: SubNets off


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


def test_ofa_per_phase_lr_restarts_at_each_boundary():
    # OFA's epochs as steps: [0,180) full, [180,305) kernel, [305,330) depth 1, [330,455) depth 2,
    # [455,480) expand 1, [480,605) expand 2; initial rates 2.6, 0.96, 0.08, 0.24, 0.08, 0.24; warm-up 5 steps
    # in the 125-step phases (5 of 125 epochs), none elsewhere
    phases = progressive_shrinking_phases(605)
    warm = [0, 5, 0, 5, 0, 5]
    rates = (2.6, 0.96, 0.08, 0.24, 0.08, 0.24)

    def lr(t):
        return progressive_shrinking_lr(t, phases, 2.6, rates, warm)

    assert lr(0) == pytest.approx(2.6)
    assert lr(90) == pytest.approx(1.3)  # half-way through the full phase's cosine: 2.6 × (1 + cos π/2) / 2
    assert lr(179) == pytest.approx(2.6 * (1 + math.cos(math.pi * 179 / 180)) / 2)  # ≈ 0.000198, end of phase
    assert lr(180) == pytest.approx(0.96 / 5)  # restart: kernel warm-up step 1 of 5
    assert lr(184) == pytest.approx(0.96)  # warm-up done
    assert lr(185) == pytest.approx(0.96)  # first cosine step of the 120
    assert lr(245) == pytest.approx(0.48)  # 60 of 120 cosine steps
    assert lr(305) == pytest.approx(0.08)  # depth phase 1: no warm-up
    assert lr(317) == pytest.approx(0.08 * (1 + math.cos(math.pi * 12 / 25)) / 2)  # 0.0425116
    assert lr(330) == pytest.approx(0.24 / 5)  # depth phase 2 warm-up
    assert lr(455) == pytest.approx(0.08)  # expand phase 1
    assert lr(480) == pytest.approx(0.048)  # expand phase 2 warm-up, step 1 of 5
    assert lr(485) == pytest.approx(0.24)
    assert lr(605) == pytest.approx(0.0)  # past the last phase: its final rate
    # one schedule over the run (the old behaviour) would enter the kernel phase at 2.6 · (1 + cos(π·180/605)) / 2
    # = 2.6 · (1 + 0.5941) / 2 ≈ 2.0723, not OFA's 0.96
    assert cosine_lr(180, 605, 2.6) == pytest.approx(2.0723, abs=1e-4)


def test_ofa_per_phase_lr_skips_empty_phases_and_checks_arguments():
    phases = [(0, 3), (3, 5), (5, 5), (5, 8), (8, 8), (8, 10)]  # progressive_shrinking_phases(10)
    rates = (2.6, 0.96, 0.08, 0.24, 0.08, 0.24)
    assert progressive_shrinking_lr(5, phases, 1.0, rates) == pytest.approx(0.24 / 2.6)  # depth 2, not the empty one
    assert progressive_shrinking_lr(8, phases, 1.0, rates) == pytest.approx(0.24 / 2.6)  # expand 2
    with pytest.raises(ValueError, match="one rate per phase"):
        progressive_shrinking_lr(0, phases, 1.0, (1.0, 0.5))
    with pytest.raises(ValueError, match="one entry per phase"):
        progressive_shrinking_lr(0, phases, 1.0, rates, warmup_steps=[0])


def test_bignas_lr_exponential_decay_with_constant_ending():
    # 10 steps per epoch, × 0.97 every 2.4 epochs = 24 steps, floor 5% of 0.1 = 0.005
    assert [bignas_lr(t, 10, 0.1) for t in (0, 23)] == pytest.approx([0.1, 0.1])
    assert bignas_lr(24, 10, 0.1) == pytest.approx(0.097)
    assert bignas_lr(48, 10, 0.1) == pytest.approx(0.09409)
    # 0.97^98 = 0.050539 > 0.05 > 0.97^99 = 0.049023: the constant ending starts with the 99th decay
    assert bignas_lr(98 * 24, 10, 0.1) == pytest.approx(0.0050539, rel=1e-4)
    assert bignas_lr(99 * 24, 10, 0.1) == pytest.approx(0.005)
    assert bignas_lr(100_000, 10, 0.1) == pytest.approx(0.005)
    # linear warm-up first, then the decay counts from its end; other rates and floors
    assert [bignas_lr(t, 10, 0.1, warmup_steps=4) for t in (0, 3, 4, 27, 28)] == pytest.approx(
        [0.025, 0.1, 0.1, 0.1, 0.097])
    assert bignas_lr(10, 1, 1.0, decay=0.5, decay_epochs=1, final_fraction=0.1) == pytest.approx(0.1)  # 0.5^10 < 0.1
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\]"):
        bignas_lr(0, 10, 0.1, decay=1.5)

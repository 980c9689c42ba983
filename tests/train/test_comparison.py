"""The SubNet-step arithmetic of equal-compute policy comparisons, on hand-computed values."""

from __future__ import annotations

import pytest

import ws_train.comparison as comparison
from ws_train.comparison import (
    des_subnet_steps,
    progressive_shrinking_subnet_steps,
    sandwich_subnet_steps,
    steps_for_subnet_budget,
)


def test_public_surface_is_pinned():
    assert sorted(comparison.__all__) == ["des_subnet_steps", "progressive_shrinking_subnet_steps",
                                          "sandwich_subnet_steps", "steps_for_subnet_budget"]


def test_subnet_steps_of_each_policy():
    assert sandwich_subnet_steps(200) == 800
    assert sandwich_subnet_steps(10, num_random=0) == 20
    # DεS, T = 200, switch at 0.4 -> 80, ramp 0.1 -> 20: max alone for 60 steps, then 140 × 4
    assert des_subnet_steps(200, 100, warmup_fraction=0.4, ramp_fraction=0.1) == 60 + 140 * 4
    # ramp in epochs: 2 epochs × 10 steps -> ramp 20 steps before the switch at 50 of 100
    assert des_subnet_steps(100, 10, warmup_fraction=0.5, ramp_epochs=2) == 30 + 70 * 4
    # OFA's epochs as steps: 180 + 125 + 2 × 150 + 4 × 150
    assert progressive_shrinking_subnet_steps(605) == 1205
    # two phases of equal weight
    assert progressive_shrinking_subnet_steps(10, (1, 1), (1, 3)) == 5 + 15
    with pytest.raises(ValueError, match="one SubNet count per phase"):
        progressive_shrinking_subnet_steps(10, (1, 1), (1, 2, 3))


def test_steps_for_subnet_budget_finds_the_closest_run_length():
    assert steps_for_subnet_budget(lambda t: 4 * t, 800) == 200
    assert steps_for_subnet_budget(lambda t: 2 * t, 401) == 200  # 400 and 402 tie: the shorter run
    assert steps_for_subnet_budget(lambda t: 3 * t, 400) == 133  # 399 beats 402
    assert steps_for_subnet_budget(lambda t: t, 1) == 1
    # PS at the sandwich's budget of a 605-step run (2420 SubNet-steps): about twice as many steps
    t = steps_for_subnet_budget(progressive_shrinking_subnet_steps, sandwich_subnet_steps(605))
    assert t == 1215
    assert abs(progressive_shrinking_subnet_steps(t) - 2420) <= 4
    with pytest.raises(ValueError, match="budget must be >= 1"):
        steps_for_subnet_budget(lambda t: t, 0)
    with pytest.raises(ValueError, match="no run of <= 100 steps"):
        steps_for_subnet_budget(lambda t: 0, 5, max_steps=100)

"""ws_core.stats: summaries over seeds and the cautious verdict, on hand-computed values."""

from __future__ import annotations

import math

import pytest

import ws_core.stats as stats
from ws_core.stats import MeanSE, mean_se, paired_difference, separated, t_critical_95, verdict


def test_public_surface_is_pinned():
    assert sorted(stats.__all__) == ["MeanSE", "mean_se", "paired_difference", "separated", "t_critical_95",
                                     "verdict"]


def test_mean_se_hand_computed():
    # 2, 4, 9: mean 5; deviations -3, -1, 4 -> s² = (9 + 1 + 16) / 2 = 13; se = sqrt(13 / 3)
    m = mean_se([2, 4, 9])
    assert m.mean == 5.0 and m.n == 3
    assert m.se == pytest.approx(math.sqrt(13 / 3))
    # two values 0.80, 0.84: s = 0.04 / sqrt(2), se = s / sqrt(2) = 0.02 (half the gap)
    assert mean_se([0.80, 0.84]).se == pytest.approx(0.02)
    # identical values: no spread
    assert mean_se([0.5, 0.5, 0.5]) == MeanSE(0.5, 0.0, 3)


def test_mean_se_single_value_has_no_standard_error():
    m = mean_se([0.7])
    assert m.mean == 0.7 and m.n == 1 and math.isnan(m.se)
    assert m.format(100, 1) == "70.0"


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")]])
def test_mean_se_rejects_empty_and_non_finite(bad):
    with pytest.raises(ValueError, match="mean_se"):
        mean_se(bad)


def test_format_scales_both_numbers():
    assert MeanSE(0.85123, 0.00312, 3).format(100, 2) == "85.12 ± 0.31"
    assert MeanSE(1234.4, 10.6, 3).format(1, 0) == "1234 ± 11"


def test_paired_difference_uses_per_seed_differences():
    # seeds share data: a = b + (0.02, 0.01, 0.03); the pairing removes the large per-seed offsets
    b = [0.50, 0.70, 0.90]
    a = [0.52, 0.71, 0.93]
    d = paired_difference(a, b)
    assert d.mean == pytest.approx(0.02)
    assert d.se == pytest.approx(math.sqrt(0.0001 / 3))  # s² = (0 + 1e-4 + 1e-4) / 2 = 1e-4
    # unpaired, the spread of b (s.e. 0.115) would swamp it
    assert mean_se(b).se == pytest.approx(0.2 / math.sqrt(3))


def test_paired_difference_needs_one_value_per_seed_in_both():
    with pytest.raises(ValueError, match="one value per seed in both lists, got 3 and 2"):
        paired_difference([1, 2, 3], [1, 2])


def test_t_critical_values():
    assert t_critical_95(1) == 12.706
    assert t_critical_95(2) == 4.303
    assert t_critical_95(4) == 2.776
    assert t_critical_95(30) == 2.042
    assert t_critical_95(100) == 1.96
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="df must be an integer >= 1"):
            t_critical_95(bad)


def test_separated_uses_the_t_interval_not_two_standard_errors():
    # 3 seeds: 4.303 × se; a difference of 3 standard errors is NOT separated (it would be at ± 2 se)
    assert not separated(MeanSE(0.03, 0.01, 3))
    assert separated(MeanSE(0.05, 0.01, 3))
    assert separated(MeanSE(-0.05, 0.01, 3))
    # 10 seeds: 2.262 × se
    assert separated(MeanSE(0.03, 0.01, 10))
    # one seed separates nothing
    assert not separated(MeanSE(0.5, math.nan, 1))


def test_verdict_calls_only_separated_differences():
    values = {"DεS": [0.80, 0.82, 0.84], "PS": [0.50, 0.52, 0.55], "sandwich": [0.81, 0.85, 0.82]}
    line = verdict(values, "DεS", "min SubNet")
    # DεS − PS: 0.30, 0.30, 0.29 -> mean 29.67 points; deviations 1/3, 1/3, -2/3 points -> s² = (6/9) / 2,
    # se = sqrt(1/3 / 3) = 1/3 point
    # DεS − sandwich: -0.01, -0.03, 0.02 -> mean -0.67, s² = (1/9 + 49/9 + 64/9) / 2 -> se 1.45 points
    assert line == ("min SubNet, DεS vs PS: higher (+29.67 ± 0.33 points, 3 seeds); "
                    "DεS vs sandwich: not separated (-0.67 ± 1.45 points, 3 seeds)")
    assert verdict({"a": [0.6, 0.61, 0.62], "b": [0.7, 0.72, 0.71]}, "a", "max").startswith("max, a vs b: lower (")


def test_verdict_with_one_seed_separates_nothing():
    assert verdict({"a": [0.9], "b": [0.1]}, "a", "acc") == "acc, a vs b: not separated (+80.00 points, 1 seed)"


def test_verdict_unknown_subject():
    with pytest.raises(ValueError, match=r"subject must be one of \['a', 'b'\], got 'c'"):
        verdict({"a": [1.0], "b": [1.0]}, "c", "acc")

"""Seed summaries of policy comparisons (ws_sushi.seeds) and measured accuracy tables, on hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from ws_core.stats import MeanSE
from ws_sushi.accuracy import AccuracyTable
from ws_sushi.seeds import difference, format_change, policy_stats, relative_change, stream_verdict, within


def _run(nc: tuple[float, float, float], sgs: tuple[float, float, float]) -> dict:
    keys = ("mean_latency_ms", "offchip_energy_mj", "served_accuracy")
    return {"no-cache": dict(zip(keys, nc)), "sgs": dict(zip(keys, sgs))}


# three seeds: latency 10→8, 10→9, 20→14 (−20 %, −10 %, −30 %); energy 100→40, 200→60, 100→30
# (−60 %, −70 %, −70 %); served accuracy +0.01, +0.02, +0.03
RUNS = [_run((10, 100, 0.80), (8, 40, 0.81)),
        _run((10, 200, 0.80), (9, 60, 0.82)),
        _run((20, 100, 0.70), (14, 30, 0.73))]


def test_policy_stats_mean_and_standard_error():
    stats = policy_stats(RUNS, ("mean_latency_ms", "offchip_energy_mj"))
    assert set(stats) == {"no-cache", "sgs"}
    lat = stats["no-cache"]["mean_latency_ms"]  # 10, 10, 20: mean 40/3, s = √(100/3), se = s/√3 = 10/3
    assert lat.n == 3 and lat.mean == pytest.approx(40 / 3) and lat.se == pytest.approx(10 / 3)
    en = stats["sgs"]["offchip_energy_mj"]  # 40, 60, 30: mean 130/3, s² = (100/9+2500/9+1600/9)/2 = 700/3
    assert en.mean == pytest.approx(130 / 3) and en.se == pytest.approx(math.sqrt(700 / 9))


def test_relative_change_is_paired_per_seed():
    lat = relative_change(RUNS, "mean_latency_ms", "sgs", "no-cache")  # −0.2, −0.1, −0.3
    assert lat.mean == pytest.approx(-0.2) and lat.se == pytest.approx(0.1 / math.sqrt(3))
    en = relative_change(RUNS, "offchip_energy_mj", "sgs", "no-cache")  # −0.6, −0.7, −0.7
    assert en.mean == pytest.approx(-2 / 3) and en.se == pytest.approx(0.1 / 3)
    # the ratio of the means would be 31/40 − 1 = −0.225, not the paired −0.2
    assert lat.mean != pytest.approx(31 / 40 - 1)


def test_difference_in_points():
    acc = difference(RUNS, "served_accuracy", "sgs", "no-cache")  # 0.01, 0.02, 0.03
    assert acc.mean == pytest.approx(0.02) and acc.se == pytest.approx(0.01 / math.sqrt(3))


def test_format_change_marks_unseparated():
    en = relative_change(RUNS, "offchip_energy_mj", "sgs", "no-cache")  # 4.303 × 0.0333 = 0.143 < 0.667
    assert format_change(en) == "-66.7 ± 3.3%"
    lat = relative_change(RUNS, "mean_latency_ms", "sgs", "no-cache")  # 4.303 × 0.0577 = 0.248 > 0.2
    assert format_change(lat) == "-20.0 ± 5.8% (n.s.)"
    acc = difference(RUNS, "served_accuracy", "sgs", "no-cache")  # 4.303 × 0.00577 = 0.0248 > 0.02
    assert format_change(acc, 100, "", 2) == "+2.00 ± 0.58 (n.s.)"
    assert format_change(MeanSE(0.05, math.nan, 1)) == "+5.0% (n.s.)"


def test_within_needs_the_whole_interval_beyond_the_goal():
    en = relative_change(RUNS, "offchip_energy_mj", "sgs", "no-cache")  # upper end −0.667 + 0.143 = −0.523
    assert within(en, -0.50)
    assert not within(en, -0.55)
    assert not within(relative_change(RUNS, "mean_latency_ms", "sgs", "no-cache"), -0.05)  # upper end +0.048
    assert within(MeanSE(0.30, 0.01, 3), 0.25)  # lower end 0.30 − 0.043 = 0.257
    assert not within(MeanSE(0.30, 0.02, 3), 0.25)  # lower end 0.214
    assert not within(MeanSE(-0.9, math.nan, 1), -0.5)  # one seed supports nothing


def test_stream_verdict_claims_only_separated_differences():
    line = stream_verdict(RUNS)
    # accuracy +0.02 ± 0.0058 (t·se 0.025), latency −3 ± 1.53 ms (6.57), energy −90 ± 25.17 mJ (108.3)
    assert line == ("served accuracy, sgs vs no-cache: not separated (+2.00 ± 0.58 points, 3 seeds) | "
                    "mean latency, sgs vs no-cache: not separated (-3.00 ± 1.53 ms, 3 seeds) | "
                    "off-chip energy, sgs vs no-cache: not separated (-90.00 ± 25.17 mJ, 3 seeds)")
    tight = [_run((10, 0, 0), (8, 0, 0)), _run((10, 0, 0), (7.9, 0, 0)), _run((10, 0, 0), (8.1, 0, 0))]
    assert stream_verdict(tight, metrics=[("mean_latency_ms", "mean latency", 1.0, " ms")]) == (
        "mean latency, sgs vs no-cache: lower (-2.00 ± 0.06 ms, 3 seeds)")


def test_seed_summaries_reject_bad_runs():
    with pytest.raises(ValueError, match="at least one run"):
        policy_stats([])
    with pytest.raises(ValueError, match="no policy 'static'"):
        relative_change(RUNS, "mean_latency_ms", "static", "no-cache")
    with pytest.raises(ValueError, match="no metric 'p99_latency_ms'"):
        difference(RUNS, "p99_latency_ms", "sgs", "no-cache")
    with pytest.raises(ValueError, match="= 0"):
        relative_change([_run((0, 1, 1), (1, 1, 1))], "mean_latency_ms", "sgs", "no-cache")


def test_measure_calls_evaluate_per_subnet_in_order():
    configs = [{"depth": [2]}, {"depth": [3]}, {"depth": [4]}]
    seen, reported = [], []

    def evaluate(cfg):
        seen.append(cfg["depth"][0])
        return 0.5 + 0.1 * cfg["depth"][0]

    table = AccuracyTable.measure(configs, evaluate, metric="top1, held-out",
                                  on_measured=lambda cfg, acc, i: reported.append((i, round(acc, 6))))
    assert seen == [2, 3, 4]
    assert reported == [(0, 0.7), (1, 0.8), (2, 0.9)]
    assert table.source == "measured" and table.label == "measured" and table.metric == "top1, held-out"
    assert [table.accuracy(c) for c in configs] == pytest.approx([0.7, 0.8, 0.9])


@pytest.mark.parametrize("bad", [1.5, -0.1, math.nan, "high", None])
def test_measure_rejects_non_accuracies(bad):
    with pytest.raises(ValueError, match=r"evaluate\(.*\) returned .*expected an accuracy in \[0, 1\]"):
        AccuracyTable.measure([{"depth": [2]}], lambda cfg: bad)

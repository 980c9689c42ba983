"""ws_serve.calibration: the load and SLO a replay uses follow the measured profile."""

from __future__ import annotations

import pytest

from ws_serve import Profile
from ws_serve.calibration import choose_load, estimate_query_cost, served_rate_ratio
from ws_serve.profile import superserve_paper_profile


def test_load_and_slo_follow_the_measured_profile():
    profile = Profile(("a", "b", "c"), (0.5, 0.7, 0.9),
                      ((2.0, 3.0, 4.0, 5.0), (4.0, 6.0, 8.0, 10.0), (10.0, 12.0, 30.0, 40.0)))
    # baseline max = "c": SLO 4 × 10 = 40 ms; batches within 20 ms: 1, 2 -> peak max(1000/10, 2000/12) = 166.7 q/s
    index, slo, rate = choose_load(profile, "max", load=0.6)
    assert index == 2 and slo == 40.0 and rate == pytest.approx(0.6 * 2000 / 12)
    # a given SLO: batches within 50 ms are all four -> 4000/40 = 100 < 2000/12
    assert choose_load(profile, "c", load=1.0, slo_ms=100.0) == (2, 100.0, pytest.approx(2000 / 12))
    # median of three is "b": SLO 16 ms, batches within 8 ms are 1..3 -> max(250, 333.3, 375) q/s
    assert choose_load(profile, "median", load=1.0) == (1, 16.0, pytest.approx(3000 / 8))
    assert choose_load(profile, "min", load=1.0)[0] == 0
    # 5 ms per request outside the forward: SLO 4 × (10 + 5) = 60; batches with L + 5 <= 30 are 1, 2;
    # throughput b / (L(b) + 5 b): 1000/15 = 66.7 and 2000/22 = 90.9 q/s
    assert choose_load(profile, "max", load=0.5, overhead_ms=5.0) == (2, 60.0, pytest.approx(0.5 * 2000 / 22))
    # a throughput measured end to end replaces the estimate
    assert choose_load(profile, "max", load=0.5, overhead_ms=5.0, capacity_qps=30.0) == (2, 60.0, 15.0)
    with pytest.raises(ValueError, match="capacity_qps must be > 0, got 0"):
        choose_load(profile, capacity_qps=0)
    with pytest.raises(ValueError, match="overhead_ms must be >= 0, got -1"):
        choose_load(profile, overhead_ms=-1)
    with pytest.raises(KeyError, match="no SubNet 'zzz'"):
        choose_load(profile, "zzz")




def test_query_cost_is_what_the_capacity_leaves_beside_the_amortised_forward():
    profile = Profile(("a", "b"), (0.5, 0.9), ((1.0, 1.5, 1.8, 2.0), (4.0, 6.0, 9.0, 16.0)))
    # "b": per-sample forward 4, 3, 3, 4 ms -> 3 ms at best; at 200 q/s a query costs 5 ms: 2 ms outside
    assert estimate_query_cost(profile, 1, 200.0) == pytest.approx(2.0)
    # "a": 1, 0.75, 0.6, 0.5 ms -> 0.5; at 500 q/s 2 ms a query: 1.5 ms outside
    assert estimate_query_cost(profile, 0, 500.0) == pytest.approx(1.5)
    # a capacity above what the forward alone allows leaves nothing (never negative)
    assert estimate_query_cost(profile, 1, 1000.0) == 0.0
    with pytest.raises(ValueError, match="capacity_qps must be > 0, got 0"):
        estimate_query_cost(profile, 0, 0.0)


def test_served_rate_ratio_counts_the_per_query_cost_beside_the_forward():
    # "c" is the most accurate; "a" the fastest at every batch
    profile = Profile(("a", "b", "c"), (0.5, 0.7, 0.9), ((1.0, 1.6), (2.0, 3.0), (4.0, 6.0)))
    # batch 2 (the largest): 3.0 vs 0.8 ms per query
    assert served_rate_ratio(profile) == pytest.approx(3.75)
    assert served_rate_ratio(profile, batch=1) == pytest.approx(4.0)
    # 1.2 ms of handling per query: (1.2 + 3.0) / (1.2 + 0.8) = 2.1; at batch 1 (1.2 + 4) / (1.2 + 1) = 2.36
    assert served_rate_ratio(profile, 1.2) == pytest.approx(2.1)
    assert served_rate_ratio(profile, 1.2, batch=1) == pytest.approx(5.2 / 2.2)
    # SuperServe's OFA-ResNet-50 profile: 40 ms vs 10.7 ms at batch 16
    paper = superserve_paper_profile()
    assert served_rate_ratio(paper) == pytest.approx(paper.latency(paper.num_subnets - 1, 16) / paper.latency(0, 16))
    with pytest.raises(ValueError, match=r"batch must be in \[1, 2\], got 3"):
        served_rate_ratio(profile, batch=3)
    with pytest.raises(ValueError, match="query_cost_ms must be a finite number >= 0, got -1"):
        served_rate_ratio(profile, -1)
    with pytest.raises(ValueError, match="query_cost_ms must be a finite number >= 0, got nan"):
        served_rate_ratio(profile, float("nan"))

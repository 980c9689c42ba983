"""SushiSched: SubNet selection, SubGraph trimming and cache planning, with hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from ws_sushi.sched import (
    NoCache,
    SchedContext,
    StaticCache,
    SubGraphStationary,
    fit_subgraph,
    plan_subgraph,
    score_subgraph,
    select_subnet,
    select_subnets,
)
from ws_sushi.subgraph import SubGraph, fetch_bytes

ACC = [0.70, 0.74, 0.77, 0.77]
LAT = [1.0, 2.0, 3.0, 2.5]


@pytest.mark.parametrize(("budget", "floor", "expected"), [
    (2.5, None, 3),   # within budget: 0, 1, 3 -> most accurate is 3
    (3.0, None, 3),   # 2 and 3 tie at 0.77 -> the faster one
    (1.5, None, 0),
    (0.5, None, 0),   # nothing fits -> the fastest (best effort)
    (2.0, 0.75, 1),   # none within budget reaches the floor -> most accurate within budget
    (2.5, 0.75, 3),
    (0.5, 0.75, 0),
])
def test_select_most_accurate_within_budget(budget, floor, expected):
    assert select_subnet(ACC, LAT, budget, floor) == expected


@pytest.mark.parametrize(("floor", "expected"), [(None, 0), (0.72, 1), (0.77, 3), (0.80, 3)])
def test_select_fastest_above_floor(floor, expected):
    assert select_subnet(ACC, LAT, budget=0.1, floor=floor, objective="latency") == expected


def test_vectorised_selection_matches_scalar():
    rng = np.random.default_rng(0)
    acc, lat = rng.uniform(0.6, 0.8, 7), rng.uniform(1, 5, 7)
    budgets, floors = rng.uniform(0.5, 6, 50), np.where(rng.random(50) < 0.5, np.nan, rng.uniform(0.6, 0.8, 50))
    for objective in ("accuracy", "latency"):
        batch = select_subnets(acc, lat, budgets, floors, objective)
        single = [select_subnet(acc, lat, b, None if np.isnan(f) else f, objective) for b, f in zip(budgets, floors)]
        assert batch.tolist() == single


def test_selection_validation():
    with pytest.raises(ValueError, match=r"objective must be one of \['accuracy', 'latency'\], got 'energy'"):
        select_subnet(ACC, LAT, 1.0, objective="energy")
    with pytest.raises(ValueError, match="equal-length"):
        select_subnets([0.7], [1.0, 2.0], [1.0])


def test_fit_subgraph_by_hand():
    g = SubGraph({"big": [[0, 10]], "mid": [[0, 6]], "small": [[0, 5]], "tiny": [[0, 3]]})
    assert fit_subgraph(g, 24) is g                                   # fits whole
    assert set(fit_subgraph(g, 12)) == {"big"}                       # 10 fits, 6 does not, 5 does not, 3 does not
    assert set(fit_subgraph(g, 14)) == {"big", "tiny"}               # 10 + 3; 6 and 5 skipped
    prio = {"small": 0, "tiny": 1, "mid": 2, "big": 3}
    assert set(fit_subgraph(g, 14, priority=prio)) == {"small", "tiny", "mid"}  # 5 + 3 + 6
    assert fit_subgraph(g, 14, bits=4, priority=prio) is g          # 5 + 3 + 3 + 2 bytes at 4 bits
    assert fit_subgraph(g, 0) == SubGraph()
    with pytest.raises(ValueError, match="capacity_bytes must be an int >= 0, got -1"):
        fit_subgraph(g, -1)


def _toy(subgraphs):
    """Latency = 1 ms per byte still to fetch (a purely memory-bound device)."""
    def evaluate(cached):
        fetch = np.array([fetch_bytes(s, cached, 8) for s in subgraphs], dtype=float)
        return fetch * 1e-3, fetch
    return evaluate


S = [SubGraph({"x": [[0, 4]]}), SubGraph({"x": [[0, 8]]}), SubGraph({"x": [[0, 12]]})]
ACC3 = [0.70, 0.75, 0.80]


def test_plan_caches_what_the_recent_mix_shares():
    # no cache: latencies 4, 8, 12 ms; budget 5 ms -> every query gets SubNet 0 (0.70).
    # candidates: G1 = fit(S1) = x[0:8] (8 B fits); G2 = fit(S1 & S2) = x[0:8] (same).
    # with x[0:8] cached: latencies 0, 0, 4 ms -> SubNet 2 (0.80) meets 5 ms: better.
    g = plan_subgraph(_toy(S), ACC3, S, served=[1, 1, 1, 2], budgets=[5e-3] * 4, floors=None, capacity_bytes=8)
    assert g == SubGraph({"x": [[0, 8]]})
    lat, fetch = _toy(S)(g)
    assert score_subgraph(lat, fetch, np.array(ACC3), np.full(4, 5e-3), None) == pytest.approx(
        (4, 3.2, -16e-3, -16.0))
    # capacity 6: x[0:8] does not fit whole -> nothing of the top SubNet's tensor fits; keep the current cache
    current = SubGraph({"x": [[0, 4]]})
    assert plan_subgraph(_toy(S), ACC3, S, [1, 1, 1, 2], [5e-3] * 4, None, 6, current=current) == current


def test_plan_keeps_the_current_subgraph_on_ties():
    current = SubGraph({"x": [[0, 8]]})
    g = plan_subgraph(_toy(S), ACC3, S, [1, 2], [5e-3] * 2, None, 8, current=current)
    assert g is current
    assert plan_subgraph(_toy(S), ACC3, S, [], [], None, 8, current=current) is current


def test_plan_memo_gives_identical_results():
    memo: dict = {}
    for served in ([1, 1, 2], [2, 2, 1], [0, 1, 2, 2]):
        a = plan_subgraph(_toy(S), ACC3, S, served, [9e-3] * len(served), None, 8)
        b = plan_subgraph(_toy(S), ACC3, S, served, [9e-3] * len(served), None, 8, memo=memo)
        assert a == b
    assert memo


def test_cache_policies():
    ctx = SchedContext(_toy(S), np.array(ACC3), S, capacity_bytes=6, bits=8)
    assert NoCache().initial(ctx) == SubGraph()
    assert StaticCache().initial(ctx) == SubGraph({"x": [[0, 4]]})  # common to all three SubNets
    with pytest.raises(ValueError, match="needs 12 bytes at 8 bits but the weight buffer holds 6 bytes"):
        StaticCache(S[2]).initial(ctx)
    sgs = SubGraphStationary(window=4, period=2)
    ctx.capacity_bytes = 8
    assert sgs.update(ctx, 0, SubGraph(), [1], [5e-3], [np.nan]) is None           # not a planning step
    assert sgs.update(ctx, 1, SubGraph(), [1, 1], [5e-3] * 2, [np.nan] * 2) == SubGraph({"x": [[0, 8]]})
    for bad in ({"window": 0}, {"period": 1.5}):
        with pytest.raises(ValueError, match="must be an int >= 1"):
            SubGraphStationary(**bad)

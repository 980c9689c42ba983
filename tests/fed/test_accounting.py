"""The FedAvg-per-target baseline's cost, counted per target and per distinct SubNet."""

from __future__ import annotations

import pytest

from ws_fed.accounting import baseline_cost, pool_baseline_costs

SFN = {"client_macs": 100.0, "bytes": 10.0}
RUNS = {"A": {"client_macs": 50.0, "bytes": 4.0}, "B": {"client_macs": 80.0, "bytes": 6.0}}


def test_targets_sharing_a_subnet_share_one_fedavg_training():
    cost = baseline_cost(SFN, ["A", "B", "B", "B"], RUNS)           # T1 -> A, T2 = T3 = T4 -> B
    assert (cost.num_targets, cost.num_distinct) == (4, 2)
    assert cost.per_target == {"client_macs": 50 + 3 * 80, "bytes": 4 + 3 * 6}   # 290, 22
    assert cost.per_distinct_subnet == {"client_macs": 50 + 80, "bytes": 4 + 6}  # 130, 10
    assert cost.ratios() == pytest.approx({"client_macs": 2.9, "bytes": 2.2,
                                           "client_macs_distinct": 1.3, "bytes_distinct": 1.0})


def test_distinct_subnets_cost_the_same_either_way():
    cost = baseline_cost(SFN, ["A", "B"], {**RUNS, "C": {"client_macs": 1e9, "bytes": 1e9}})  # C: not a target
    assert cost.per_target == cost.per_distinct_subnet == {"client_macs": 130.0, "bytes": 10.0}


def test_pooling_sums_before_dividing():
    one = baseline_cost(SFN, ["A", "B", "B"], RUNS)                                  # 210 / 130 MACs
    two = baseline_cost({"client_macs": 300.0, "bytes": 30.0}, ["A"], RUNS)          # 50 / 50 MACs
    pooled = pool_baseline_costs([one, two])
    assert pooled.ratio("client_macs", distinct=False) == pytest.approx((210 + 50) / 400)
    assert pooled.ratio("client_macs", distinct=True) == pytest.approx((130 + 50) / 400)
    assert (pooled.num_targets, pooled.num_distinct) == (4, 3)


@pytest.mark.parametrize("args, match", [
    ((SFN, [], RUNS), "no targets"),
    ((SFN, ["A", "Z"], RUNS), r"no FedAvg cost for SubNet\(s\) \['Z'\]"),
    (({"client_macs": 0.0, "bytes": 1.0}, ["A"], RUNS), "must be > 0"),
    (({"client_macs": 1.0}, ["A"], RUNS), r"superfednas lacks cost\(s\) \['bytes'\]"),
])
def test_bad_input_is_refused(args, match):
    with pytest.raises(ValueError, match=match):
        baseline_cost(*args)
    with pytest.raises(ValueError, match="no runs"):
        pool_baseline_costs([])


def test_the_recorded_three_seed_runs_pooled_both_ways():
    """docs/benchmarks.md, "300 rounds, candidates shared across targets": per seed SuperFedNAS's cost,
    FedAvg's per-target totals, and each target's SubNet MMACs. A seed's FedAvg runs all process the same
    samples (seeded client sampling, same rounds and local epochs), so a SubNet's FedAvg compute is the
    per-target total × its MACs / Σ of the targets' MACs."""
    seeds = [  # SuperFedNAS GMACs, FedAvg GMACs (K trainings), targets' SubNet MMACs
        (606.9, 2385.3, [0.829, 1.151, 1.640, 1.640]),
        (603.4, 2063.1, [0.735, 1.279, 1.279, 1.279]),
        (606.2, 2364.5, [0.846, 1.202, 1.585, 1.585]),
    ]
    costs = []
    for sfn, total, macs in seeds:
        runs = {m: {"client_macs": total * m / sum(macs)} for m in macs}
        costs.append(baseline_cost({"client_macs": sfn}, macs, runs, keys=("client_macs",)))
    pooled = pool_baseline_costs(costs)
    assert round(pooled.ratio("client_macs", distinct=False), 2) == 3.75
    assert round(pooled.ratio("client_macs", distinct=True), 2) == 2.31

"""One-shot specialisation: search per target within the budget, no retraining."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from ws_core.cost import CostModel
from ws_fed.specialise import DeploymentTarget, SubNetAccuracy, fittest_within, format_table, specialise
from ws_fed.task import make_loader, supernet_arrays


def proxy_accuracy(cfg):
    """A cheap deterministic fitness for search tests: more active blocks and wider blocks score higher."""
    return sum(e for e in cfg["expand"] if e is not None) / 200.0


def test_each_target_gets_a_subnet_within_its_budget(net):
    costs = CostModel(net)
    lo, hi = costs.macs(net.space.min()), costs.macs(net.space.max())
    targets = [DeploymentTarget("small", max_macs=lo + 0.2 * (hi - lo)),
               DeploymentTarget("large", max_macs=lo + 0.8 * (hi - lo))]
    before = supernet_arrays(net)
    results = specialise(net, targets, proxy_accuracy, population_size=6, generations=2, seed=0)
    assert [r.target.name for r in results] == ["small", "large"]
    for r in results:
        assert r.macs <= r.target.max_macs and r.cost == r.macs
        assert r.val_accuracy == proxy_accuracy(r.subnet) and r.test_accuracy is None
    assert results[0].macs < results[1].macs and results[0].val_accuracy <= results[1].val_accuracy
    for k, v in supernet_arrays(net).items():  # no retraining, no weight change
        np.testing.assert_array_equal(v, before[k])
    again = specialise(net, targets, proxy_accuracy, population_size=6, generations=2, seed=0)
    assert [r.subnet for r in again] == [r.subnet for r in results]
    table = format_table(results)
    assert "| small | MACs <=" in table and results[0].subnet.id in table


def test_fittest_within_hand_computed():
    scored = {"a": 0.90, "b": 0.95, "c": 0.95, "d": 0.99, "e": 0.95}
    cost = {"a": 1.0, "b": 3.0, "c": 2.0, "d": 10.0, "e": 2.0}.__getitem__
    assert fittest_within(scored, cost, 10.0) == "d"
    assert fittest_within(scored, cost, 9.9) == "c"  # ties b, c, e at 0.95: lower cost (c, e), then first scored (c)
    assert fittest_within(scored, cost, 1.0) == "a"  # within means <=
    with pytest.raises(ValueError, match=r"none of the 5 scored SubNets fits the budget 0\.5"):
        fittest_within(scored, cost, 0.5)
    asked = []
    fittest_within(scored, lambda c: asked.append(c) or cost(c), 9.9)
    assert asked == ["d", "b", "c", "e"]  # by decreasing score; "a" (0.90) cannot beat c (0.95)


def hashed_fitness(cfg):
    """A deterministic fitness unrelated to size, so independent searches on small populations miss the best."""
    return (int(cfg.id, 16) % 997) / 997.0


def test_shared_candidates_give_each_target_the_fittest_scored_subnet(net):
    costs = CostModel(net)
    lo, hi = costs.macs(net.space.min()), costs.macs(net.space.max())
    targets = [DeploymentTarget(f"t{i}", max_macs=lo + f * (hi - lo)) for i, f in enumerate((0.1, 0.3, 0.6, 0.9))]
    calls = []

    def fitness(cfg):
        calls.append(cfg)
        return hashed_fitness(cfg)

    shared = specialise(net, targets, fitness, population_size=6, generations=2, seed=0)
    assert len(calls) == len(set(calls))  # each distinct SubNet scored once across all targets
    for r in shared:
        within = [hashed_fitness(c) for c in set(calls) if costs.macs(c) <= r.target.max_macs]
        assert r.fitness == r.val_accuracy == max(within) and r.macs <= r.target.max_macs
    fit = [r.fitness for r in shared]
    assert fit == sorted(fit)  # nested budgets: a looser budget is never less fit
    independent = specialise(net, targets, hashed_fitness, population_size=6, generations=2, seed=0,
                             share_candidates=False)
    assert [r.evaluated for r in independent] == [r.evaluated for r in shared]  # same searches
    assert all(i.fitness <= s.fitness for i, s in zip(independent, shared))
    assert any(i.fitness < s.fitness for i, s in zip(independent, shared))  # sharing changed a pick here


def test_search_settings_default_to_superfednas_and_are_passed_on(net, monkeypatch):
    specialise_module = sys.modules[specialise.__module__]  # ws_fed.specialise (the package re-exports the function)
    seen = []
    real = specialise_module.evolutionary_search

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(specialise_module, "evolutionary_search", spy)
    target = [DeploymentTarget("t", max_macs=CostModel(net).macs(net.space.max()))]
    specialise(net, target, proxy_accuracy, population_size=4, generations=1)
    # nas/run_NAS.py of SuperFedNAS: parent ratio 0.25, mutation ratio 0.2, mutation probability 0.1
    assert {k: seen[0][k] for k in ("parent_ratio", "mutation_ratio", "mutate_prob")} == {
        "parent_ratio": 0.25, "mutation_ratio": 0.2, "mutate_prob": 0.1}
    specialise(net, target, proxy_accuracy, population_size=4, generations=1, parent_ratio=0.5,
               mutation_ratio=1.0, mutate_prob=0.3)
    assert (seen[1]["parent_ratio"], seen[1]["mutation_ratio"], seen[1]["mutate_prob"]) == (0.5, 1.0, 0.3)
    assert (seen[1]["population_size"], seen[1]["generations"]) == (4, 1)


def test_latency_target_is_measured(net):
    results = specialise(net, [DeploymentTarget("cpu", max_latency_ms=1e4)], proxy_accuracy,
                         population_size=2, generations=0, latency_repeats=1)
    assert 0 < results[0].cost <= 1e4 and results[0].target.metric == "latency_ms"


def test_budget_below_the_smallest_subnet_names_the_target(net):
    with pytest.raises(ValueError, match=r"target 'tiny' \(MACs <= 1e-05M\): even the smallest SubNet costs"):
        specialise(net, [DeploymentTarget("tiny", max_macs=10.0)], proxy_accuracy, population_size=2,
                   generations=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "exactly one of max_macs or max_latency_ms"),
    (dict(max_macs=1e6, max_latency_ms=3.0), "exactly one"),
    (dict(max_macs=-1.0), "finite number > 0, got -1.0"),
    (dict(max_latency_ms=float("nan")), "finite number > 0"),
])
def test_target_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeploymentTarget("t", **kwargs)


def test_duplicate_target_names(net):
    t = DeploymentTarget("a", max_macs=5e6)
    with pytest.raises(ValueError, match="distinct"):
        specialise(net, [t, t], proxy_accuracy)


def test_subnet_accuracy_recalibrates_a_private_copy(net, digits):
    before = supernet_arrays(net)
    acc = SubNetAccuracy(net, make_loader(digits.val, 256, shuffle=False),
                         bn_loader=make_loader(digits.val, 64, shuffle=False), bn_batches=1)
    a = acc(net.space.min())
    assert 0.0 <= a <= 1.0 and acc(net.space.min().to_dict()) == a and len(acc.cache) == 1
    for k, v in supernet_arrays(net).items():
        np.testing.assert_array_equal(v, before[k])


def test_criteria_rank_hand_computed_results(net, digits):
    """Fitness per criterion from known (accuracy, loss) pairs on n = 10 examples."""
    from ws_fed.task import EvalResult

    acc = SubNetAccuracy(net, make_loader(digits.val, 256, shuffle=False))
    space = net.space
    a, b, c, d = (space.validate(space.sample(torch.Generator().manual_seed(i))) for i in range(4))
    assert len({a, b, c, d}) == 4
    acc.cache.update({a: EvalResult(0.9, 0.5, 10), b: EvalResult(0.9, 0.3, 10),
                      c: EvalResult(1.0, 50.0, 10), d: EvalResult(0.8, 0.0, 10)})

    def order(criterion):
        acc.criterion = criterion
        return sorted("abcd", key=lambda k: -acc({"a": a, "b": b, "c": c, "d": d}[k]))

    acc.criterion = "accuracy_then_loss"
    assert acc(a) == pytest.approx(0.9 + 1 / (11 * 1.5))  # tie-break term below one image (0.1)
    assert acc(d) == pytest.approx(0.8 + 1 / 11) and acc(d) < acc(a)
    assert order("accuracy_then_loss") == ["c", "b", "a", "d"]
    assert order("loss") == ["d", "b", "a", "c"]
    assert order("accuracy")[0] == "c" and order("accuracy")[-1] == "d" and acc(a) == acc(b) == 0.9
    allowed = r"\['accuracy', 'loss', 'accuracy_then_loss'\]"
    with pytest.raises(ValueError, match=rf"criterion must be one of {allowed}, got 'f1'"):
        SubNetAccuracy(net, [], criterion="f1")


def test_search_by_loss_reports_measured_accuracy_and_loss(net, digits):
    val = make_loader(digits.val, 256, shuffle=False)
    bn = make_loader(digits.val, 64, shuffle=False)
    by_loss = SubNetAccuracy(net, val, bn_loader=bn, bn_batches=1, criterion="loss")
    costs = CostModel(net)
    target = DeploymentTarget("t", max_macs=costs.macs(net.space.max()))
    [r] = specialise(net, [target], by_loss, population_size=4, generations=1, seed=0)
    measured = by_loss.evaluate(r.subnet)
    assert r.fitness == -r.val_loss == -measured.loss and r.val_accuracy == measured.accuracy
    assert r.fitness == max(-e.loss for e in by_loss.cache.values())  # the lowest loss among those scored
    assert r.to_dict()["val_loss"] == r.val_loss and f"{r.val_loss:.4f}" in format_table([r])

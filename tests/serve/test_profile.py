from __future__ import annotations

import json

import pytest
import torch

from ws_core.cost import CostModel, LatencyTable
from ws_serve.profile import (
    PROXY_ACCURACY,
    Profile,
    ServedSet,
    latency_cache_path,
    pareto_served_set,
    profile_served,
    superserve_paper_profile,
)
from ws_serve.subnetact import SubNetAct


def test_pareto_served_set_spreads_over_the_cost_range(tiny_net):
    served = pareto_served_set(tiny_net, n=5, pool=30, generator=torch.Generator().manual_seed(0))
    assert len(served) == 5 and served.accuracy_source == PROXY_ACCURACY
    costs = CostModel(tiny_net)
    macs = [s.macs for s in served]
    assert macs == sorted(macs)
    assert macs[0] == costs.macs(tiny_net.space.min()) and macs[-1] == costs.macs(tiny_net.space.max())
    assert [s.accuracy for s in served] == pytest.approx([m / macs[-1] for m in macs])
    # reproducible with the same seed
    again = pareto_served_set(tiny_net, n=5, pool=30, generator=torch.Generator().manual_seed(0))
    assert again.ids == served.ids


def test_pareto_served_set_with_an_accuracy_function_keeps_only_the_front(tiny_net):
    # a made-up accuracy that prefers SubNets with large kernels: the front must be non-dominated in it
    def accuracy(cfg):
        return sum(k for k in cfg["kernel"] if k is not None) / 100.0

    served = pareto_served_set(tiny_net, n=4, accuracy=accuracy, pool=20, search_generations=1,
                               generator=torch.Generator().manual_seed(0))
    assert served.accuracy_source == "given"
    pts = [(s.macs, s.accuracy) for s in served]
    for m, a in pts:
        assert not any((m2 <= m and a2 > a) or (m2 < m and a2 >= a) for m2, a2 in pts)
    assert [s.accuracy for s in served] == sorted(s.accuracy for s in served)
    with pytest.raises(ValueError, match="n must be"):
        pareto_served_set(tiny_net, n=0)


def test_served_set_json_round_trip_and_validation(tiny_net, configs, tmp_path):
    served = ServedSet.from_accuracies(tiny_net, configs[:3], [0.7, 0.9, 0.8])
    assert [s.accuracy for s in served] == [0.7, 0.8, 0.9]  # sorted by accuracy
    served.save(tmp_path / "s.json")
    assert ServedSet.load(tmp_path / "s.json") == served
    with pytest.raises(ValueError, match="distinct"):
        ServedSet.from_accuracies(tiny_net, [configs[0], configs[0]], [0.1, 0.2])
    with pytest.raises(ValueError, match="needs 'config'"):
        ServedSet.from_dict({"subnets": [{"accuracy": 1.0}]})
    with pytest.raises(ValueError, match="2 configs but 1"):
        ServedSet.from_accuracies(tiny_net, configs[:2], [0.5])


def test_profile_validation_and_monotone():
    with pytest.raises(ValueError, match="sorted by accuracy"):
        Profile(("a", "b"), (2.0, 1.0), ((1.0,), (1.0,)))
    with pytest.raises(ValueError, match="finite and > 0"):
        Profile(("a",), (1.0,), ((1.0, 0.0),))
    with pytest.raises(ValueError, match="row lengths"):
        Profile(("a", "b"), (1.0, 2.0), ((1.0, 2.0), (1.0,)))
    p = Profile(("a",), (1.0,), ((2.0, 1.5, 3.0, 2.5),)).monotone()
    assert p.latency_ms == ((2.0, 2.0, 3.0, 3.0),)
    assert p.restrict(2).max_batch == 2
    assert Profile.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_profile_served_measures_caches_and_reuses(tiny_net, configs, tmp_path):
    served = ServedSet.from_accuracies(tiny_net, configs[:2], [0.6, 0.8])
    SubNetAct(tiny_net, served.configs)
    cache = latency_cache_path(tmp_path / "net.safetensors", "cpu")
    assert cache.name.startswith("net.safetensors.latency-cpu") and cache.suffix == ".json"
    p = profile_served(tiny_net, served, max_batch=2, cache=cache, warmup=0, repeats=1)
    assert p.subnet_ids == tuple(served.ids) and p.max_batch == 2
    assert cache.is_file()
    table = LatencyTable.load(cache)
    assert {(e.subnet_id, e.batch_size) for e in table.entries} == {(i, b) for i in served.ids for b in (1, 2)}
    # poison the cached numbers: a reused cache must return them unchanged
    for e in table.entries:
        object.__setattr__(e, "median_ms", 1000.0 + e.batch_size)
    table.save(cache)
    again = profile_served(tiny_net, served, max_batch=2, cache=cache)
    assert again.latency_ms == ((1001.0, 1002.0), (1001.0, 1002.0))
    # a larger batch range is not covered: measured again and the cache replaced
    bigger = profile_served(tiny_net, served, max_batch=3, cache=cache, warmup=0, repeats=1)
    assert bigger.max_batch == 3 and bigger.latency(0, 1) < 1000.0
    cache.write_text("{not json")
    assert profile_served(tiny_net, served, max_batch=1, cache=cache, warmup=0, repeats=1).max_batch == 1


def test_paper_profile_has_the_documented_shape():
    p = superserve_paper_profile()
    assert p.num_subnets == 24 and p.max_batch == 16
    assert p.accuracies[0] == pytest.approx(73.82) and p.accuracies[-1] == pytest.approx(80.16)
    assert p.latency(0, 16) == pytest.approx(10.7, abs=0.01)
    assert p.latency(23, 16) == pytest.approx(40.0, abs=0.01)
    # P3: the largest SubNet at batch 2 costs about what the smallest costs at batch 16
    assert p.latency(23, 2) == pytest.approx(p.latency(0, 16), rel=0.05)
    # P1 and P2: monotone in batch size and in accuracy
    assert all(list(r) == sorted(r) for r in p.latency_ms)
    assert all(p.latency(s, 8) < p.latency(s + 1, 8) for s in range(23))

from __future__ import annotations

import json
import warnings

import pytest
import torch

from ws_core.cost import CostModel, LatencyEntry, LatencyTable
from ws_core.latency import BlockLatencyTable, device_key, subnet_blocks
from ws_serve.profile import (
    PROXY_ACCURACY,
    Profile,
    ServedSet,
    anchor_indices,
    block_table_path,
    latency_cache_path,
    latency_inversions,
    pareto_served_set,
    predict_served_profile,
    profile_served,
    superserve_paper_profile,
)
from ws_serve.subnetact import SubNetAct

POISON = 1e9  # a cached latency no measurement returns: tells a reused cache from a new measurement


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
    lines = []
    p = profile_served(tiny_net, served, max_batch=2, cache=cache, warmup=0, repeats=1, rounds=2,
                       progress=lines.append)
    assert p.subnet_ids == tuple(served.ids) and p.max_batch == 2
    assert p.monotone_in_macs is not None  # checked (whatever this machine's timings say)
    assert cache.is_file()
    table = LatencyTable.load(cache)
    assert {(e.subnet_id, e.batch_size) for e in table.entries} == {(i, b) for i in served.ids for b in (1, 2)}
    assert all(e.rounds >= 2 for e in table.entries)
    # progress: a header, then one line per SubNet and round from ws_core.cost.profile_latency
    macs = [s.macs / 1e6 for s in served]
    assert lines[0] == ("latency profile: 2 SubNets x batch 1..2 on cpu (SuperNet, in place), 2 round(s) of 1 timed "
                        "forwards each")
    assert f"profiling SubNet 1/2 ({macs[0]:.1f} MMACs) batch 1, 2, round 1/2" in lines
    assert f"profiling SubNet 2/2 ({macs[1]:.1f} MMACs) batch 1, 2, round 2/2" in lines
    # poison the cached numbers: a reused cache must return them unchanged
    for e in table.entries:
        object.__setattr__(e, "median_ms", POISON + e.batch_size)
    table.save(cache)
    lines.clear()
    again = profile_served(tiny_net, served, max_batch=2, cache=cache, rounds=2, progress=lines.append)
    assert again.latency_ms == ((POISON + 1, POISON + 2), (POISON + 1, POISON + 2))
    assert lines == [f"latency profile: reusing {cache}"]
    # a cache with fewer rounds than asked for (e.g. written before rounds existed) is measured again
    assert profile_served(tiny_net, served, max_batch=2, cache=cache, warmup=0, repeats=1,
                          rounds=3).latency(0, 1) != POISON + 1
    table = LatencyTable.load(cache)
    for e in table.entries:
        object.__setattr__(e, "median_ms", POISON + e.batch_size)
    table.save(cache)
    # a larger batch range is not covered: measured again and the cache replaced
    bigger = profile_served(tiny_net, served, max_batch=3, cache=cache, warmup=0, repeats=1, rounds=1)
    assert bigger.max_batch == 3 and bigger.latency(0, 1) != POISON + 1
    cache.write_text("{not json")
    assert profile_served(tiny_net, served, max_batch=1, cache=cache, warmup=0, repeats=1, rounds=1).max_batch == 1


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


def test_latency_inversions_hand_computed():
    ids = ["a", "b", "c"]
    assert latency_inversions(ids, [1, 2, 3], [1.0, 2.0, 3.0]) == []
    # a has fewer MACs than b and c but is slower than both; b vs c is in order
    assert latency_inversions(ids, [1, 2, 3], [5.0, 2.0, 3.0]) == [("a", "b"), ("a", "c")]
    # equal MACs are never an inversion; a 1% difference is within rtol = 0.02
    assert latency_inversions(ids, [1, 1, 3], [2.0, 1.0, 3.0]) == []
    assert latency_inversions(ids, [1, 2, 3], [1.0, 3.03, 3.0], rtol=0.02) == []
    assert latency_inversions(ids, [1, 2, 3], [1.0, 3.03, 3.0]) == [("b", "c")]
    with pytest.raises(ValueError, match="3 ids, 2 MACs and 3 latencies"):
        latency_inversions(ids, [1, 2], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="rtol must be >= 0, got -1"):
        latency_inversions(ids, [1, 2, 3], [1.0, 2.0, 3.0], rtol=-1)


class FakeMeasure:
    """``measure(configs, batch_sizes)`` returning given latencies: ``rows[call][subnet id] = [L(1), L(2)]``
    (the last call's rows repeat); records which SubNets each call measured."""

    def __init__(self, *rows):
        self.rows, self.calls = rows, []

    def __call__(self, configs, batch_sizes):
        rows = self.rows[min(len(self.calls), len(self.rows) - 1)]
        self.calls.append([c.id for c in configs])
        table = LatencyTable("cpu", "fake", "active")
        table.entries = [LatencyEntry(c.id, c.to_dict(), b, rows[c.id][b - 1], rows[c.id][b - 1], 1, 3)
                         for c in configs for b in batch_sizes]
        return table


@pytest.fixture
def served3(tiny_net):
    """Three SubNets of distinct MACs; ``ids`` in ascending MACs."""
    space = tiny_net.space
    cfgs = [space.min(), space.max(), space.sample(torch.Generator().manual_seed(3))]
    served = ServedSet.from_accuracies(tiny_net, cfgs, [0.5, 0.9, 0.7])
    macs = [s.macs for s in served]
    assert len(set(macs)) == 3
    return served, [s.id for s in sorted(served, key=lambda s: s.macs)]


def test_profile_served_flags_latency_not_monotone_in_macs(tiny_net, served3):
    served, (lo, mid, hi) = served3
    # lo (fewest MACs) is the slowest at batch 2 in both measurements: re-measured once, then flagged
    measure = FakeMeasure({lo: [1.0, 9.0], mid: [2.0, 4.0], hi: [3.0, 6.0]})
    with pytest.warns(RuntimeWarning, match="not monotone in MACs"):
        p = profile_served(tiny_net, served, max_batch=2, measure=measure)
    assert measure.calls == [served.ids, served.ids]  # all three are involved: each measured twice, no more
    assert p.monotone_in_macs is False and p.inversions == ((lo, mid), (lo, hi))
    assert p.latency(p.index(lo), 2) == 9.0
    # recorded in the profile JSON, and read back
    d = json.loads(json.dumps(p.to_dict()))
    assert d["monotone_in_macs"] is False and d["inversions"] == [[lo, mid], [lo, hi]]
    assert Profile.from_dict(d) == p


def test_profile_served_remeasures_once_and_keeps_the_faster_median(tiny_net, served3):
    served, (lo, mid, hi) = served3
    # first measurement: mid slower than hi at batch 2 (8 > 6); only mid and hi are measured again and
    # mid now takes 5: the minimum of the two medians is monotone -> no warning
    measure = FakeMeasure({lo: [1.0, 2.0], mid: [2.0, 8.0], hi: [3.0, 6.0]},
                          {lo: [0.1, 0.1], mid: [2.5, 5.0], hi: [3.5, 7.0]})
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = profile_served(tiny_net, served, max_batch=2, measure=measure, progress=lines.append)
    assert measure.calls == [served.ids, [i for i in served.ids if i in (mid, hi)]]
    assert p.monotone_in_macs is True and p.inversions == ()
    # lo was not re-measured; mid keeps min(8, 5) = 5 and min(2, 2.5) = 2; hi keeps 3 and 6
    assert p.latency_ms[p.index(lo)] == (1.0, 2.0)
    assert p.latency_ms[p.index(mid)] == (2.0, 5.0)
    assert p.latency_ms[p.index(hi)] == (3.0, 6.0)
    assert lines[1] == ("latency profile: latency at batch 2 is not monotone in MACs (1 pair(s)); "
                        "re-measuring 2 SubNet(s) once")
    # within the relative tolerance (2%): not an inversion, measured once
    measure = FakeMeasure({lo: [1.0, 2.0], mid: [2.0, 6.1], hi: [3.0, 6.0]})
    assert profile_served(tiny_net, served, max_batch=2, measure=measure).monotone_in_macs is True
    assert len(measure.calls) == 1


def test_profile_json_is_backward_compatible(tmp_path):
    old = {"subnet_ids": ["a", "b"], "accuracies": [1.0, 2.0], "latency_ms": [[1.0, 2.0], [2.0, 3.0]],
           "device": "cpu", "note": "measured"}
    p = Profile.from_dict(old)
    assert p.monotone_in_macs is None and p.inversions == ()
    assert p.to_dict() == dict(old, monotone_in_macs=None, inversions=[])
    flagged = p.with_macs_check(False, [("a", "b")])
    flagged.save(tmp_path / "p.json")
    assert Profile.load(tmp_path / "p.json") == flagged
    assert flagged.monotone().inversions == (("a", "b"),) and flagged.restrict(1).monotone_in_macs is False
    with pytest.raises(ValueError, match="monotone_in_macs must be true, false or null"):
        Profile.from_dict(dict(old, monotone_in_macs="no"))
    with pytest.raises(ValueError, match=r"inversions must be \[id_a, id_b\] pairs"):
        Profile.from_dict(dict(old, inversions=[["a"]]))
    # a latency table written before rounds existed loads with rounds = 1
    table = {"device": "cpu", "device_name": "x", "mode": "active", "torch_version": "2", "threads": 1,
             "entries": [{"subnet_id": "a", "config": {}, "batch_size": 1, "median_ms": 1.0, "p90_ms": 1.0,
                          "repeats": 5}]}
    assert LatencyTable.from_dict(table).entries[0].rounds == 1


def test_synthetic_profile_is_not_checked():
    assert superserve_paper_profile().monotone_in_macs is None


def test_profile_served_times_the_backend_that_serves(tiny_net, configs, tmp_path):
    from ws_serve.backends import EagerBackend

    served = ServedSet.from_accuracies(tiny_net, configs[:2], [0.6, 0.8])
    act = SubNetAct(tiny_net, served.configs)

    class Counting(EagerBackend):
        name = "counting"

        def __init__(self, act):
            super().__init__(act)
            self.calls = []

        def __call__(self, x, subnet):
            self.calls.append((tuple(x.shape), subnet))
            return super().__call__(x, subnet)

    backend = Counting(act)
    no_recheck = float("inf")  # timing noise must not trigger the MACs re-measurement in this test
    cache = latency_cache_path(tmp_path / "net.safetensors", "cpu", backend.name)
    assert cache.name.endswith("-counting.json") and cache != latency_cache_path(tmp_path / "net.safetensors")
    p = profile_served(tiny_net, served, max_batch=2, cache=cache, warmup=0, repeats=2, rounds=1, backend=backend,
                       sample_shape=(3, 32, 32), inversion_rtol=no_recheck)
    # every timed forward went through the backend, at the served input shape, for each SubNet and batch
    assert sorted(set(backend.calls)) == sorted({((b, 3, 32, 32), sid) for sid in served.ids for b in (1, 2)})
    assert len(backend.calls) == 2 * 2 * 2
    assert LatencyTable.load(cache).mode == "counting" and p.subnet_ids == tuple(served.ids)
    # a cache measured another way (the SuperNet in place) is not taken for this backend's
    backend.calls.clear()
    profile_served(tiny_net, served, max_batch=2, cache=cache, warmup=0, repeats=2, rounds=1, backend=backend,
                   sample_shape=(3, 32, 32), inversion_rtol=no_recheck)
    assert backend.calls == []  # same backend: the cache is reused
    eager_cache = latency_cache_path(tmp_path / "net.safetensors", "cpu")
    profile_served(tiny_net, served, max_batch=2, cache=eager_cache, warmup=0, repeats=1, rounds=1)
    assert LatencyTable.load(eager_cache).mode == "active" and backend.calls == []
    profile_served(tiny_net, served, max_batch=2, cache=eager_cache, warmup=0, repeats=2, rounds=1, backend=backend,
                   sample_shape=(3, 32, 32), inversion_rtol=no_recheck)
    assert len(backend.calls) == 8  # the table's mode says another backend measured it: measured again


def test_a_profile_cached_with_other_onnx_runtime_settings_is_measured_again(tiny_net, configs, tmp_path):
    from ws_serve.backends import OnnxRuntimeBackend

    served = ServedSet.from_accuracies(tiny_net, configs[:2], [0.7, 0.8])
    act = SubNetAct(tiny_net, served.configs)
    backends = {"fixed": OnnxRuntimeBackend(act, cache_dir=None, threads=1, spinning="off"),
                "measured": OnnxRuntimeBackend(act, cache_dir=None, max_threads=3, spinning="run")}
    assert backends["fixed"].timing_key == "onnxruntime(threads=1, spinning=off)"
    assert backends["measured"].timing_key == "onnxruntime(threads=1|3, spinning=run)"
    assert OnnxRuntimeBackend(act, max_threads=1, spinning="run").timing_key == "onnxruntime(threads=1, spinning=run)"
    assert OnnxRuntimeBackend(act, spinning=True).timing_key == (
        f"onnxruntime(threads=1|{torch.get_num_threads()}, spinning=on)")
    cache = latency_cache_path(tmp_path / "net.safetensors", "cpu", "onnxruntime")
    saved = []
    for name in ("fixed", "measured", "measured"):
        backend = backends[name]
        backend.prepare((3, 32, 32), [1, 2])
        profile_served(tiny_net, served, max_batch=2, cache=cache, warmup=0, repeats=1, rounds=1, backend=backend,
                       sample_shape=(3, 32, 32), inversion_rtol=float("inf"))
        assert LatencyTable.load(cache).mode == backend.timing_key
        saved.append(cache.read_text())
    assert saved[2] == saved[1]  # the same settings again: the cached profile is reused, not re-measured


# Predicted profiles (per-block latency table + anchors) ---------------------------------------------------
def _filled_table(net, served, per_batch=(1.0, 1.5)):
    """A block table holding every block of ``served`` at batches 1 and 2, each entry set by hand."""
    table = BlockLatencyTable(device_key("cpu"))
    table.measure(net, served.configs, (1, 2), warmup=0, repeats=1, rounds=1)
    for row in table.entries.values():
        row["1"], row["2"] = per_batch
    return table


def test_anchor_indices_spread_over_macs():
    assert anchor_indices([5, 1, 3, 2, 4], 3) == [0, 1, 2]  # cheapest (1), middle (2), largest (0)
    assert anchor_indices([5, 1, 3, 2, 4], 2) == [0, 1]
    assert anchor_indices([5, 1], 3) == [0, 1]
    assert anchor_indices([1, 2, 3], 1) == [2]
    assert anchor_indices([1, 2, 3], 0) == []
    with pytest.raises(ValueError, match="anchors must be >= 0, got -1"):
        anchor_indices([1, 2], -1)


def test_predicted_profile_scales_block_sums_by_the_anchors(tiny_net, served3):
    served, (lo, mid, hi) = served3
    table = _filled_table(tiny_net, served)
    n_entries = len(table)
    blocks = {s.id: len(subnet_blocks(tiny_net, s.config)) for s in served}
    summed = {i: [blocks[i] * 1.0, blocks[i] * 1.5] for i in served.ids}
    # anchors lo and hi (the ends of the MACs range), measured 2x and 3x their block sums: factor median 2.5
    measure = FakeMeasure({lo: [2 * v for v in summed[lo]], hi: [3 * v for v in summed[hi]],
                           mid: [POISON, POISON]})
    lines = []
    p = predict_served_profile(tiny_net, served, max_batch=2, table=table, anchors=2, measure=measure,
                               progress=lines.append)
    assert measure.calls == [[i for i in served.ids if i in (lo, hi)]]  # only the anchors are measured whole
    assert len(table) == n_entries and all(row == {"1": 1.0, "2": 1.5} for row in table.entries.values())
    assert p.latency_ms[p.index(lo)] == pytest.approx([2 * v for v in summed[lo]])  # anchors keep their measurement
    assert p.latency_ms[p.index(hi)] == pytest.approx([3 * v for v in summed[hi]])
    assert p.latency_ms[p.index(mid)] == pytest.approx([2.5 * v for v in summed[mid]])
    # leave-one-out: lo predicted with hi's factor 3 (error 50 %), hi with lo's 2 (33.3 %), at both batches
    assert "leave-one-out error on the anchors: mean 41.7 %, max 50.0 %" in p.note
    assert p.note.startswith("predicted from per-block latencies") and "2 anchor SubNet(s)" in p.note
    assert p.accuracies == tuple(s.accuracy for s in served)
    assert lines[0].startswith("latency prediction: timing the blocks of 3 SubNets")


def test_predicted_profile_without_anchors_is_the_bare_block_sums(tiny_net, served3):
    served, _ = served3
    table = _filled_table(tiny_net, served, (2.0, 3.0))
    measure = FakeMeasure({})
    p = predict_served_profile(tiny_net, served, max_batch=2, table=table, anchors=0, measure=measure)
    assert measure.calls == []
    for s in served:
        n = len(subnet_blocks(tiny_net, s.config))
        assert p.latency_ms[p.index(s.id)] == pytest.approx([2.0 * n, 3.0 * n])
    assert "no anchors: bare block sums" in p.note and "fewer than 2 anchors" in p.note


def test_predicted_profile_caches_the_block_table_per_device(tiny_net, served3, tmp_path):
    served, _ = served3
    cache = block_table_path(tmp_path / "net.safetensors")
    assert cache.name == "net.safetensors.blocks.json"
    first = predict_served_profile(tiny_net, served, max_batch=2, cache=cache, anchors=0, warmup=0, repeats=1,
                                   rounds=1)
    assert all(v > 0 for row in first.latency_ms for v in row)
    stored = json.loads(cache.read_text())
    assert list(stored) == [device_key("cpu")]
    for row in stored[device_key("cpu")]["entries"].values():  # poison: a reused table predicts from these
        row["1"], row["2"] = 1.0, 2.0
    cache.write_text(json.dumps(stored))
    again = predict_served_profile(tiny_net, served, max_batch=2, cache=cache, anchors=0)
    for s in served:
        n = len(subnet_blocks(tiny_net, s.config))
        assert again.latency_ms[again.index(s.id)] == pytest.approx([1.0 * n, 2.0 * n])
    with pytest.raises(ValueError, match=r"the block table is for cuda:0 \(.*\), the device is cpu"):
        predict_served_profile(tiny_net, served, max_batch=2, table=BlockLatencyTable("cuda:0 (GPU)"))
    with pytest.raises(ValueError, match="max_batch must be >= 1, got 0"):
        predict_served_profile(tiny_net, served, max_batch=0)

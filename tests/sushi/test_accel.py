"""The accelerator cost model: hand-computed equations, hand-built layouts, ws-core MACs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ws_core import CostModel
from ws_sushi.accel import SushiAccel, layer_macs, subnet_layout
from ws_sushi.sched import fit_subgraph
from ws_sushi.subgraph import SubGraph


def test_layer_equations_by_hand(toy_profile):
    accel = SushiAccel(toy_profile)
    # 5 sustained MACs/cycle at 1 MHz: 100 MACs -> 20 cycles -> 20 us; 101 MACs -> 21 cycles
    assert accel.compute_seconds(100) == pytest.approx(20e-6)
    assert accel.compute_seconds(101) == pytest.approx(21e-6)
    assert accel.compute_seconds(0) == 0.0
    assert accel.fetch_seconds(50) == pytest.approx(0.05)           # 50 B at 1000 B/s
    assert accel.layer_latency(100, 50) == pytest.approx(0.05)       # overlapped: max
    serial = SushiAccel(toy_profile.replace(overlap_fetch=False, layer_overhead_cycles=30))
    assert serial.layer_latency(100, 50) == pytest.approx(50e-6 + 0.05)  # (20 + 30) cycles + fetch
    assert accel.energy(100, 40, 10) == pytest.approx((100e-12, 80e-12, 30e-12))


def test_query_cost_by_hand(toy_profile, make_layout):
    accel = SushiAccel(toy_profile)
    lay = make_layout("s", a_out=5, b_in=3, a_macs=500, b_macs=6)
    # bytes at 8 bits: layer a = a.weight 20 + a.bn 5 = 25, layer b = 6
    cost = accel.query_cost(lay)
    assert [lc.weight_bytes for lc in cost.layers] == [25, 6]
    assert cost.fetch_bytes == 31
    assert cost.layers[0].compute_s == pytest.approx(100e-6) and cost.layers[0].fetch_s == pytest.approx(0.025)
    assert cost.latency_s == pytest.approx(0.025 + 0.006)
    cached = SubGraph({"a.weight": [[0, 3], [0, 4]], "b.weight": [[0, 2], [0, 3]]})  # 12 of a, all of b
    cost = accel.query_cost(lay, cached)
    assert [lc.fetch_bytes for lc in cost.layers] == [13, 0]
    assert cost.latency_s == pytest.approx(0.013 + 2e-6)  # layer b: compute ceil(6/5)=2 cycles
    assert cost.offchip_energy_j == pytest.approx(13 * 3e-12)
    assert cost.energy_j == pytest.approx(506e-12 + 31 * 2e-12 + 13 * 3e-12)


def test_candidate_costs_match_query_cost(toy_profile, make_layout):
    accel = SushiAccel(toy_profile)
    layouts = [make_layout("s0", 2, 1, 80, 2), make_layout("s1", 5, 3, 500, 6), make_layout("s2", 8, 3, 900, 6)]
    costs = accel.candidates(layouts)
    for cached in (None, SubGraph({"a.weight": [[0, 4], [0, 4]]}), layouts[1].subgraph):
        lat, fetch = costs.evaluate(cached)
        for i, lay in enumerate(layouts):
            q = accel.query_cost(lay, cached)
            assert lat[i] == pytest.approx(q.latency_s) and fetch[i] == q.fetch_bytes
            assert costs.energy_j(cached)[i] == pytest.approx(q.energy_j)
    assert costs.tensor_priority() == {"a.weight": 25, "a.bn": 25, "b.weight": 1}


def test_layer_macs_sum_to_ws_core(tiny_mbv3):
    net = tiny_mbv3
    costs = CostModel(net)
    g = torch.Generator().manual_seed(0)
    for cfg in [net.space.min(), net.space.max()] + [net.space.sample(g) for _ in range(3)]:
        macs = layer_macs(net, cfg)
        assert sum(macs.values()) == costs.macs(cfg)
    macs = layer_macs(net, net.space.min())
    assert macs["stem.conv.conv"] == 216 * 32 * 32  # 8x3x3x3 weights, stride-1 stem on 32x32
    assert macs["head.classifier"] == 10 * 448      # linear: one position
    assert macs["stages.0.blocks.0.conv_dw"] == 24 * 9 * 32 * 32  # depthwise 3x3, 24 channels


def test_layer_macs_on_another_supernet():
    import timm

    net = timm.create_model("ws_ofa_resnet50_025_32", num_classes=10)
    cfg = net.space.min()
    assert sum(layer_macs(net, cfg).values()) == CostModel(net).macs(cfg)


def test_layouts_fuse_batchnorm_into_layers(tiny_mbv3):
    lay = subnet_layout(tiny_mbv3, tiny_mbv3.space.min())
    assert set(lay.tensor_layer) == set(lay.subgraph)
    bn = lay.tensor_layer["stem.conv.bn.weight"]
    assert lay.layers[bn] == "stem.conv.conv"
    assert len(lay.layers) == len(lay.macs) == len(lay.positions)


def test_caching_lowers_latency_and_traffic_on_mbv3(tiny_mbv3):
    net = tiny_mbv3
    accel = SushiAccel("zcu104")
    layouts = [subnet_layout(net, net.space.min()), subnet_layout(net, net.space.max())]
    costs = accel.candidates(layouts)
    lat0, fetch0 = costs.evaluate(None)
    half = fit_subgraph(layouts[0].subgraph, layouts[0].subgraph.nbytes(8) // 2, 8, costs.tensor_priority())
    lat1, fetch1 = costs.evaluate(half)
    assert np.all(fetch1 < fetch0) and np.all(lat1 <= lat0)
    assert fetch0.tolist() == [lay.subgraph.nbytes(8) for lay in layouts]
    full = accel.query_cost(layouts[1], layouts[1].subgraph)
    assert full.fetch_bytes == 0 and full.offchip_energy_j == 0


def test_bad_bits_and_profile():
    with pytest.raises(ValueError, match=r"bits must be an int in \[1, 32\]"):
        SushiAccel("zcu104", bits=64)
    with pytest.raises(ValueError, match="unknown hardware profile"):
        SushiAccel("no-such-board")


def test_measured_compute_is_spread_over_layers_by_macs(toy_profile, make_layout):
    """With ``compute_ms`` (e.g. a per-block latency table) a SubNet's compute is its measured latency,
    split over its layers by MACs; the weight fetch is still modelled."""
    seen = []

    def compute_ms(config):
        seen.append(config)
        return 50.0

    accel = SushiAccel(toy_profile, compute_ms=compute_ms)
    lay = make_layout("s", a_out=5, b_in=3, a_macs=500, b_macs=6)
    cost = accel.query_cost(lay)
    assert seen == ["s"]
    a, b = cost.layers
    assert a.compute_s == pytest.approx(0.05 * 500 / 506) and b.compute_s == pytest.approx(0.05 * 6 / 506)
    # layer a: compute 49.4 ms > fetch 25 ms; layer b: fetch 6 ms > compute 0.59 ms
    assert cost.latency_s == pytest.approx(0.05 * 500 / 506 + 0.006)
    serial = SushiAccel(toy_profile.replace(overlap_fetch=False), compute_ms=compute_ms)
    assert serial.query_cost(lay).latency_s == pytest.approx(0.05 + 0.025 + 0.006)
    assert "compute measured" in repr(accel)
    # the vectorised costs agree, under any cached SubGraph
    layouts = [make_layout("s0", 2, 1, 80, 2), lay]
    costs = accel.candidates(layouts)
    for cached in (None, SubGraph({"a.weight": [[0, 4], [0, 4]]})):
        lat, _ = costs.evaluate(cached)
        for i, layout in enumerate(layouts):
            assert lat[i] == pytest.approx(accel.query_cost(layout, cached).latency_s)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_measured_compute_must_be_a_latency(toy_profile, make_layout, bad):
    accel = SushiAccel(toy_profile, compute_ms=lambda _cfg: bad)
    with pytest.raises(ValueError, match=r"compute_ms returned .* expected a latency >= 0 in ms"):
        accel.query_cost(make_layout("s", 5, 3, 500, 6))

"""Simulation: a hand-computed three-query stream, and the real pipeline on ws_ofa_mbv3_035_32."""

from __future__ import annotations

import numpy as np
import pytest

from ws_sushi.accel import SushiAccel
from ws_sushi.accuracy import AccuracyTable, uniform_subnets
from ws_sushi.sched import NoCache, StaticCache, SubGraphStationary
from ws_sushi.simulate import SushiSystem, build_system, compare_policies, format_summary, simulate
from ws_sushi.stream import QueryStream, generate_stream, reference_phases


@pytest.fixture
def hand_system(toy_profile, make_layout):
    # toy device: 1000 B/s, compute negligible (10 and 5 MACs -> 2 and 1 us); overlap -> max per layer.
    # s0: layer a 10 B + layer b 2 B = 12 B -> 12 ms uncached; s1: 25 B + 6 B = 31 B -> 31 ms uncached.
    accel = SushiAccel(toy_profile)
    layouts = [make_layout("s0", 2, 1, 10, 5), make_layout("s1", 5, 3, 10, 5)]
    return SushiSystem(accel, None, layouts, accel.candidates(layouts), np.array([0.70, 0.80]),
                       capacity_bytes=30, supernet_bytes=31)


STREAM = QueryStream.from_queries([0.0, 0.005, 0.100], [0.040, 0.040, 0.040])


def test_no_cache_by_hand(hand_system):
    r = simulate(STREAM, hand_system, NoCache())
    # q0: s1 (31 ms <= 40); q1 waits 26 ms -> budget 14 ms -> s0 (12 ms); q2: s1
    assert r.subnet.tolist() == [1, 0, 1]
    assert r.finish_s == pytest.approx([0.031, 0.043, 0.131], abs=1e-9)
    assert r.latency_s == pytest.approx([0.031, 0.038, 0.031], abs=1e-9)
    assert r.fetch_bytes.tolist() == [31, 12, 31] and r.offchip_bytes == 74
    assert r.offchip_energy_j == pytest.approx(74 * 3e-12)
    assert r.summary()["served_accuracy"] == pytest.approx((0.8 + 0.7 + 0.8) / 3)
    assert r.met.all()


def test_static_cache_by_hand(hand_system):
    r = simulate(STREAM, hand_system, StaticCache())
    # cached: what s0 and s1 share = s0's 12 B; s1 then fetches 15 + 4 B -> 19 ms
    assert r.subnet.tolist() == [1, 1, 1]
    assert r.service_s == pytest.approx([0.019] * 3, abs=1e-9)
    assert r.latency_s == pytest.approx([0.019, 0.033, 0.019], abs=1e-9)
    assert r.offchip_bytes == 57 and r.cache_updates == 0


def test_subgraph_stationary_by_hand(hand_system):
    r = simulate(STREAM, hand_system, SubGraphStationary(window=2, period=1))
    # after q0 the plan caches fit(s1, 30 B) = b.weight (6 B, 1 output position first) + a.weight (20 B):
    # s1 then fetches only a.bn (5 B) -> 5.001 ms. Loading it: 26 B - 10 B already cached = 16 B = 16 ms.
    assert r.cache_updates == 1 and r.fill_bytes == 16
    assert r.subnet.tolist() == [1, 1, 1]
    assert r.service_s == pytest.approx([0.019, 0.005001, 0.005001], abs=1e-9)
    assert r.start_s == pytest.approx([0.0, 0.035, 0.100], abs=1e-9)  # q1 waits for q0 and the fill
    assert r.fetch_bytes.tolist() == [19, 5, 5] and r.offchip_bytes == 45
    assert r.cached_bytes.tolist() == [12, 26, 26]


def test_compare_and_format(hand_system):
    results = compare_policies(STREAM, hand_system, [NoCache(), StaticCache(), SubGraphStationary(2, 1)])
    assert list(results) == ["no-cache", "static", "sgs"]
    text = format_summary(results)
    assert "no-cache" in text and "sgs" in text and "latency -" in text and "energy -" in text
    with pytest.raises(ValueError, match="distinct"):
        compare_policies(STREAM, hand_system, [NoCache(), NoCache()])
    with pytest.raises(ValueError, match="objective must be one of"):
        simulate(STREAM, hand_system, NoCache(), objective="cheap")


@pytest.fixture(scope="module")
def mcu_system():
    import timm
    import torch

    import ws_core  # noqa: F401

    torch.manual_seed(0)
    net = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10)
    table = AccuracyTable.log_macs_proxy(net, uniform_subnets(net.space), 0.70, 0.77)
    # 4-bit weights: the 256 KiB buffer holds more than the SubGraph all candidates share (the min SubNet,
    # 142 KB) but less than the SuperNet (485 KB) -- the regime where SubGraph Stationary can beat a static cache
    return net, build_system(net, table, "mcu_m7", bits=4)


def test_real_system_saves_offchip_traffic(mcu_system):
    _, system = mcu_system
    assert len(system.layouts) == 27 and system.capacity_bytes == 256 * 1024
    lat0 = system.costs.latency(None) * 1e3
    phases = reference_phases((lat0.min(), lat0.max()), (system.accuracy.min(), system.accuracy.max()),
                              load=0.3, phase_s=4 * lat0.max() / 1e3 * 10)
    stream = generate_stream(phases, seed=0)
    results = compare_policies(stream, system, [NoCache(), StaticCache(), SubGraphStationary(16, 4)],
                               objective="latency")
    base, static, sgs = (results[k] for k in ("no-cache", "static", "sgs"))
    # the same SubNets are chosen (the fastest above each floor), so only caching differs
    assert np.array_equal(base.subnet, static.subnet)
    assert base.fetch_bytes.tolist() == system.costs.weight_bytes[base.subnet].tolist()
    assert static.offchip_bytes < base.offchip_bytes
    assert sgs.offchip_bytes < static.offchip_bytes
    assert sgs.summary()["mean_service_ms"] <= static.summary()["mean_service_ms"]


def test_cache_larger_than_the_model(mcu_system):
    net, system = mcu_system
    with pytest.raises(ValueError, match=r"cache \(\d+ bytes\) is larger than the whole SuperNet \(484541 bytes at 4"):
        build_system(net, system.table, "mcu_m7", bits=4, cache_bytes=system.supernet_bytes + 1)


def test_candidate_outside_the_supernet(mcu_system):
    net, _ = mcu_system
    bad = net.space.max().to_dict()
    bad["depth"] = [5] * len(bad["depth"])
    table = AccuracyTable([bad], [0.7])
    with pytest.raises(ValueError, match=r"outside the SuperNet .*'depth'"):
        build_system(net, table, "mcu_m7")

"""FINN folding, cycle/throughput estimates and report reading (pure, hand-computed); FINN's build if importable."""

from __future__ import annotations

import json

import pytest

from ws_sushi.finn import (
    FinnLayer,
    Folding,
    estimate_performance,
    finn_available,
    folding_config,
    mvau_cycles,
    read_finn_reports,
    run_finn_estimate,
    set_folding,
    target_cycles,
    vvau_cycles,
)


def test_cycle_formulas_by_hand():
    assert mvau_cycles(mh=16, mw=27, pe=4, simd=3, pixels=100) == 4 * 9 * 100
    assert vvau_cycles(channels=8, kernel_area=9, pe=2, simd=3, pixels=10) == 4 * 3 * 10
    with pytest.raises(ValueError, match=r"PE \| MH"):
        mvau_cycles(16, 27, pe=5, simd=3)
    with pytest.raises(ValueError, match=r"SIMD \| k_h"):
        vvau_cycles(8, 9, pe=2, simd=2)
    assert target_cycles(100e6, 1000) == 100_000


def test_mvau_folding_by_hand():
    layer = FinnLayer("fc", "MVAU", mh=8, mw=12, pixels=10)
    # SIMD through divisors of 12: 960, 480, 320, 240, 160, then 12 -> 80 < 100; PE 1 already meets it
    assert set_folding([layer], 100) == {"fc": Folding(pe=1, simd=12, cycles=80)}
    # weight stream capped at 32 bits: SIMD 6 would be 48 bits -> back to 4 (240 cycles); PE 4 -> 60
    assert set_folding([layer], 100, mvau_wwidth_max=32) == {"fc": Folding(pe=4, simd=4, cycles=60)}


def test_vvau_folding_by_hand():
    layer = FinnLayer("dw", "VVAU", mh=8, mw=9, pixels=10)
    # PE through divisors of 8: 720, 360, 180, 90 (still >= 50 at PE = C) -> SIMD: 1 -> 90, 3 -> 30
    assert set_folding([layer], 50) == {"dw": Folding(pe=8, simd=3, cycles=30)}


def test_two_pass_relaxation_by_hand():
    slow = FinnLayer("slow", "MVAU", mh=2, mw=2, pixels=1000)   # at most 1000 cycles even fully unfolded
    fast = FinnLayer("fast", "MVAU", mh=4, mw=4, pixels=100)
    folding = set_folding([slow, fast], 100)
    # second pass with target 1000: fast folds to SIMD 2 (800 < 1000), PE 1; slow stays at 1000
    assert folding == {"slow": Folding(2, 2, 1000), "fast": Folding(1, 2, 800)}
    assert set_folding([slow, fast], 100, two_pass_relaxation=False)["fast"] == Folding(4, 4, 100)


def test_folding_config_and_estimate_by_hand():
    layers = [FinnLayer("Conv_0", "MVAU", 8, 27, 100), FinnLayer("Conv_1", "VVAU", 8, 9, 100),
              FinnLayer("Gemm_0", "MVAU", 10, 8, 1)]
    folding = {"Conv_0": Folding(1, 1, 100), "Conv_1": Folding(1, 1, 300), "Gemm_0": Folding(1, 1, 200)}
    cfg = folding_config(layers, folding)
    assert list(cfg) == ["Defaults", "MVAU_hls_0", "VVAU_hls_0", "MVAU_hls_1"]
    assert cfg["MVAU_hls_0"] == {"PE": 1, "SIMD": 1, "ram_style": "auto", "resType": "auto",
                                 "mem_mode": "internal_decoupled", "runtime_writeable_weights": 0}
    perf = estimate_performance(layers, folding, clock_hz=100e6)
    assert perf["max_cycles"] == 300 and perf["max_cycles_node_name"] == "VVAU_hls_0"
    assert perf["critical_path_cycles"] == 600
    assert perf["estimated_throughput_fps"] == pytest.approx(1e8 / 300)
    assert perf["estimated_latency_ns"] == pytest.approx(6000.0)
    assert "MVAU_rtl_1" in folding_config(layers, folding, impl="rtl")


def test_bad_folding_inputs():
    with pytest.raises(ValueError, match="op must be 'MVAU' or 'VVAU'"):
        FinnLayer("x", "LSTM", 1, 1)
    with pytest.raises(ValueError, match="target_cycles_per_frame must be an int >= 1"):
        set_folding([FinnLayer("x", "MVAU", 2, 2)], 0)
    with pytest.raises(ValueError, match="no MVAU/VVAU layers"):
        set_folding([], 10)


def test_read_finn_reports(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    perf = {"critical_path_cycles": 36332, "max_cycles": 9372, "max_cycles_node_name": "MVAU_hls_1",
            "estimated_throughput_fps": 10670.08, "estimated_latency_ns": 363320.0}
    (report / "estimate_network_performance.json").write_text(json.dumps(perf))
    (report / "estimate_layer_resources.json").write_text(json.dumps({"total": {"LUT": 12547.0, "BRAM_18K": 25}}))
    r = read_finn_reports(tmp_path)
    assert r.throughput_fps == pytest.approx(10670.08) and r.latency_ns == 363320.0
    assert r.total_resources == {"LUT": 12547.0, "BRAM_18K": 25} and r.layer_cycles == {}
    (report / "estimate_network_performance.json").write_text(json.dumps({"max_cycles": 1}))
    with pytest.raises(ValueError, match="missing FINN fields"):
        read_finn_reports(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a FINN build output"):
        read_finn_reports(tmp_path / "nothing")


@pytest.mark.skipif(finn_available(), reason="FINN is importable: the unavailable-path error cannot occur")
def test_run_finn_estimate_without_finn(tmp_path):
    with pytest.raises(RuntimeError, match="FINN compiler is not importable"):
        run_finn_estimate(tmp_path / "m.onnx", tmp_path / "out", target_fps=1000)


@pytest.mark.slow
@pytest.mark.skipif(not finn_available(), reason="the FINN compiler (finn.builder.build_dataflow) is not importable; "
                                                 "it is not on PyPI, install it from https://github.com/Xilinx/finn")
def test_finn_estimate_only_build(tmp_path):
    import brevitas.nn as qnn
    import torch
    from torch import nn

    from ws_sushi.finn import finn_layers
    from ws_sushi.quant import export_qonnx

    torch.manual_seed(0)
    model = nn.Sequential(qnn.QuantIdentity(bit_width=4, return_quant_tensor=True),
                          qnn.QuantLinear(64, 32, bias=True, weight_bit_width=4), qnn.QuantReLU(bit_width=4),
                          qnn.QuantLinear(32, 10, bias=True, weight_bit_width=4)).eval()
    x = torch.rand(1, 64)
    export_qonnx(model, x, tmp_path / "mlp.onnx")
    report = run_finn_estimate(tmp_path / "mlp.onnx", tmp_path / "build", clock_hz=100e6, target_fps=10000)
    assert report.throughput_fps > 0 and report.latency_ns > 0 and report.total_resources
    # FINN's pipeline bottleneck cannot beat our estimate of the same layers folded for the same target
    layers = finn_layers(tmp_path / "mlp.onnx")
    ours = estimate_performance(layers, set_folding(layers, target_cycles(100e6, 10000)), 100e6)
    assert report.network["max_cycles"] >= 1 and ours["max_cycles"] >= 1

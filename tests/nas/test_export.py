from __future__ import annotations

import sys
import types

import pytest
import torch

from ws_nas import DARTSNetwork, export_qonnx
from ws_nas.export import sushi_exporter


def test_missing_ws_sushi_fails_clearly(monkeypatch):
    monkeypatch.setitem(sys.modules, "ws_sushi", None)
    with pytest.raises(ImportError, match="goes through ws-sushi, which is not installed"):
        sushi_exporter()


def test_ws_sushi_without_exporter_fails_clearly(monkeypatch):
    fake = types.ModuleType("ws_sushi")
    fake.quant = types.ModuleType("ws_sushi.quant")
    monkeypatch.setitem(sys.modules, "ws_sushi", fake)
    monkeypatch.setitem(sys.modules, "ws_sushi.quant", fake.quant)
    with pytest.raises(ImportError, match="has no QONNX exporter"):
        sushi_exporter()


@pytest.mark.slow   # imports brevitas + qonnx and runs the exporter (~10-20 s)
def test_final_network_exports_to_qonnx_through_ws_sushi(genotype, tmp_path):
    pytest.importorskip("ws_sushi")
    pytest.importorskip("brevitas")
    pytest.importorskip("qonnx")
    from ws_nas.export import to_brevitas
    from ws_sushi.quant import run_qonnx

    torch.manual_seed(0)
    net = DARTSNetwork(genotype, C=4, layers=3, in_chans=1)
    with torch.no_grad():                     # non-trivial BN statistics
        for _ in range(3):
            net(torch.randn(16, 1, 8, 8))
    net.eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        expected = net(x)
        # Same numerics in brevitas layers (up to float32 rounding of the constant scales).
        assert torch.allclose(to_brevitas(net)(x), expected, rtol=0, atol=1e-5)
    path = tmp_path / "final.qonnx.onnx"
    model = export_qonnx(net, path, x[:1])
    assert path.is_file()
    got = run_qonnx(model, x[:1])
    assert abs(got - expected[:1].numpy()).max() < 1e-5                # qonnx's executor agrees
    quant = [n for n in model.graph.node if n.op_type == "Quant"]
    assert len(quant) == 2 * len(net.quantized_layers())               # weights + input activations
    bit_widths = sorted(int(model.get_initializer(n.input[3])) for n in quant)
    want = sorted(b for c in net.quantized_layers() for b in (c.weight_bit_width, c.act_bit_width))
    assert bit_widths == want                                          # every layer keeps its own bits

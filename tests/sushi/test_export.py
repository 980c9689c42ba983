"""Quantized SubNet -> QONNX (brevitas export, qonnx cleanup) -> qonnx execution == PyTorch; FINN layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ws_core import CostModel
from ws_core.bn import recalibrate_bn
from ws_sushi.finn import finn_layers, set_folding, target_cycles
from ws_sushi.quant import QuantSpec, UnsupportedLayerError, check_qonnx, check_supported, export_qonnx, quantize_subnet


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import timm

    import ws_core  # noqa: F401

    torch.manual_seed(0)
    net = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(8, 3, 32, 32, generator=g) for _ in range(3)]
    cfg = net.space.min()
    recalibrate_bn(net, batches, cfg)  # random-init BN statistics would shrink activations to ~1e-10
    sub = net.extract(cfg).eval()
    qsub = quantize_subnet(sub, QuantSpec(weight_bits=4, act_bits=8), calibration=batches)
    path = tmp_path_factory.mktemp("qonnx") / "subnet.onnx"
    x = batches[0][:2]
    model = export_qonnx(qsub, x, path)
    return net, cfg, sub, qsub, model, path, x


@pytest.mark.slow
def test_qonnx_execution_matches_pytorch(exported):
    net, _, sub, qsub, model, path, x = exported
    assert path.is_file()
    ops = {n.op_type for n in model.graph.node}
    assert "Quant" in ops and "Conv" in ops
    with torch.no_grad():
        out = qsub(x)
        float_out = sub(x)
    assert out.abs().max() > 1e-3                          # meaningful outputs, not vanishing activations
    assert check_qonnx(model, qsub, x) <= 1e-5 * float(out.abs().max())
    assert (out - float_out).abs().max() > 0               # and it really is quantized
    assert net.active == net.space.max()                   # extracting left the SuperNet untouched


@pytest.mark.slow
def test_weight_quant_nodes_carry_the_bit_width(exported):
    *_, model, _, _ = exported
    layers = finn_layers(model)
    assert {lay.weight_bits for lay in layers} == {4}


@pytest.mark.slow
def test_finn_layers_match_ws_core_macs(exported):
    net, cfg, sub, _, model, _, _ = exported
    layers = finn_layers(model)
    n_compute = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in sub.modules())
    assert len(layers) == n_compute
    assert sum(lay.macs for lay in layers) == CostModel(net).macs(cfg)
    dw = [lay for lay in layers if lay.op == "VVAU"]
    assert len(dw) == sum(isinstance(m, nn.Conv2d) and m.groups > 1 for m in sub.modules())
    folding = set_folding(layers, target_cycles(100e6, 1000))
    assert max(f.cycles for f in folding.values()) < 100_000


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.rnn = nn.GRU(4, 4)


def test_unsupported_layers_fail_before_export(tmp_path, tiny_mbv3):
    with pytest.raises(UnsupportedLayerError, match=r"layer 'rnn' of type GRU is not supported for QONNX export; "
                                                    r"supported layers are \["):
        check_supported(_Recurrent())
    with pytest.raises(UnsupportedLayerError, match="GELU"):
        quantize_subnet(nn.Sequential(nn.Conv2d(3, 4, 1), nn.GELU()))
    with pytest.raises(UnsupportedLayerError, match=r"elastic SuperNet layer .* net.extract\(cfg\)"):
        export_qonnx(tiny_mbv3, torch.zeros(1, 3, 32, 32), tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())


def test_quant_spec_validation():
    with pytest.raises(ValueError, match=r"weight_bits must be an int in \[2, 16\], got 1"):
        QuantSpec(weight_bits=1)
    assert QuantSpec(act_bits=None).act_bits is None

from __future__ import annotations

import math

import pytest
import torch

from ws_nas import PRIMITIVES, CellSuperNet, MixedQuantConv2d, QuantConv2d
from ws_nas.operations import build_op, conv_layers
from ws_nas.supernet import channel_shuffle, reduction_layers


def test_darts_space_shape():
    net = CellSuperNet(num_classes=10, C=4, layers=3, in_chans=1, bits=(2, 4))
    assert len(PRIMITIVES) == 8
    assert [c.reduction for c in net.cells] == [False, True, True]
    assert reduction_layers(8) == {2, 5}
    assert all(len(c.edges) == 14 for c in net.cells)
    assert net.alphas_normal.shape == net.alphas_reduce.shape == (14, 8)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("bits, partial, edge_norm", [
    (None, 1, False), ((4,), 2, True), ((2, 4, 8), 2, False), ((2, 4), 1, True),
])
def test_options_forward_backward(bits, partial, edge_norm):
    torch.manual_seed(0)
    net = CellSuperNet(C=4, layers=3, steps=2, multiplier=2, in_chans=1, bits=bits, partial_channels=partial,
                       edge_normalization=edge_norm)
    net(torch.randn(4, 1, 8, 8)).logsumexp(-1).sum().backward()
    arch, prec, weights = net.arch_parameters(), net.precision_parameters(), net.weight_parameters()
    ids = [id(p) for p in arch + prec + weights]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))     # a partition of the parameters
    assert len(arch) == (4 if edge_norm else 2)
    assert all(p.grad is not None for p in arch)
    assert net.has_precision_mixtures == (bits is not None and len(bits) > 1)
    kinds = {type(m) for m in conv_layers(net.cells)}
    expected = {None: torch.nn.Conv2d, (4,): QuantConv2d}.get(bits, MixedQuantConv2d)
    assert kinds == {expected}
    if bits == (2, 4, 8):
        assert all(p.grad is not None for p in prec) and len(prec) == 2 * len(net.mixed_convs())


def test_partial_channels_bypass_and_shuffle():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    net = CellSuperNet(C=8, layers=3, steps=2, multiplier=2, in_chans=1, bits=None, partial_channels=4)
    op = net.cells[0].edges[0].op("sep_conv_3x3")
    assert conv_layers(op)[0].in_channels == 2          # 8 / 4 channels go through the operations


def test_expected_bitops_of_a_tiny_cell_by_hand():
    # One reduction cell (layers=1), one node (steps=1), stem 1 -> 2 channels, cell C = 2 * 2 = 4, input 4x4.
    #   preprocess0, preprocess1: 1x1 convs 2 -> 4 on 4x4         : 4 * 2 * 16        = 128 MACs each
    #   two edges (stride 2) with dil_conv_3x3 on 2x2 outputs:
    #     depthwise 3x3 (4 ch)                                   : 4 * 1 * 9 * 4     = 144 MACs
    #     pointwise 4 -> 4                                       : 4 * 4 * 4         =  64 MACs
    #   total 128 + 128 + 2 * (144 + 64)                                            = 672 MACs
    # Every conv: softmax(γ_w) = (0.25, 0.75) over (2, 4) -> E[w] = 3.5; γ_a = 0 -> E[a] = 3.
    torch.manual_seed(0)
    net = CellSuperNet(num_classes=3, C=2, layers=1, steps=1, multiplier=1, stem_multiplier=1, in_chans=1,
                       primitives=["max_pool_3x3", "dil_conv_3x3"], bits=(2, 4))
    net.trace(4)
    convs = net.mixed_convs()
    assert [m.macs for m in convs] == [128, 128, 144, 64, 144, 64]
    with torch.no_grad():
        for m in convs:
            m.gamma_weight.copy_(torch.tensor([0.0, math.log(3.0)]))
            m.gamma_act.zero_()
    assert net.expected_bitops().item() == pytest.approx(672 * 3.5 * 3)
    assert net.complexity().item() == pytest.approx(672 * 3.5 * 3 / 128)   # normalised by the first mixed conv
    # d complexity / d γ_w(first conv) = macs/128 * E[a] * d E[w]/d γ_w = 3 * p (1 - p) * (4 - 2) * (-1, 1)
    net.complexity().backward()
    assert torch.allclose(convs[0].gamma_weight.grad, torch.tensor([-1.125, 1.125]))


def test_expected_bitops_needs_trace_and_mixtures():
    with pytest.raises(ValueError, match="no precision mixtures"):
        CellSuperNet(C=4, layers=3, steps=1, multiplier=1, in_chans=1, bits=None).expected_bitops()
    net = CellSuperNet(C=4, layers=3, steps=1, multiplier=1, in_chans=1, bits=(2, 4))
    with pytest.raises(RuntimeError, match="trace"):
        net.expected_bitops()


def test_misconfiguration_fails_clearly():
    with pytest.raises(ValueError, match=r"unknown operation 'conv_3x3'; allowed: \['none'"):
        CellSuperNet(primitives=["none", "conv_3x3"])
    with pytest.raises(ValueError, match="besides 'none'"):
        CellSuperNet(primitives=["none"])
    with pytest.raises(ValueError, match="unsupported bit-width 6"):
        CellSuperNet(bits=(2, 6))
    with pytest.raises(ValueError, match="must be an even integer"):
        CellSuperNet(C=6, partial_channels=4)
    with pytest.raises(ValueError, match="multiplier must be in"):
        CellSuperNet(steps=2, multiplier=3)
    with pytest.raises(ValueError, match="unknown operation"):
        build_op("conv_3x3", 4, 1)

from __future__ import annotations

import pytest
import torch

from ws_nas import CellPrecision, DARTSNetwork, Genotype, QuantConv2d, cost_report, post_training_quantize
from ws_nas.operations import conv_layers


def _bits(module):
    return [(c.weight_bit_width, c.act_bit_width) for c in conv_layers(module)]


def test_genotype_precision_is_applied_per_convolution(genotype):
    net = DARTSNetwork(genotype, num_classes=10, C=4, layers=3, in_chans=1)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    for cell, prec in zip(net.cells, genotype.precision):
        assert cell.reduction == prec.reduction
        assert _bits(cell.preprocess0) == list(prec.preprocess0)
        assert _bits(cell.preprocess1) == list(prec.preprocess1)
        assert [_bits(op) for op in cell.ops] == [list(e) for e in prec.edges]
    assert type(net.stem[0]) is torch.nn.Conv2d and type(net.classifier) is torch.nn.Linear   # float


def test_deeper_network_reuses_search_cells_cyclically(genotype):
    net = DARTSNetwork(genotype, C=4, layers=5, in_chans=1)      # N R N R N
    assert [c.reduction for c in net.cells] == [False, True, False, True, False]
    normal, _red0, red1 = genotype.precision
    assert [_bits(op) for op in net.cells[2].ops] == [list(e) for e in normal.edges]
    assert [_bits(op) for op in net.cells[3].ops] == [list(e) for e in red1.edges]
    # Cell 2 follows a reduction cell: its preprocess0 is a FactorizedReduce (2 convs) while the search
    # cell had a 1x1 conv; it takes the highest searched bits for both convolutions.
    assert _bits(net.cells[2].preprocess0) == [(4, 4), (4, 4)]
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_uniform_and_float_precision(genotype, float_genotype):
    net = DARTSNetwork(genotype, C=4, layers=3, in_chans=1, precision=(2, 4))
    assert {(c.weight_bit_width, c.act_bit_width) for c in net.quantized_layers()} == {(2, 4)}
    assert len(net.quantized_layers()) == len(conv_layers(net.cells))
    assert DARTSNetwork(genotype, C=4, layers=3, in_chans=1, precision="float").quantized_layers() == []
    assert DARTSNetwork(float_genotype, C=4, layers=3, in_chans=1).precision == "float"
    with pytest.raises(ValueError, match="precision must be 'genotype', 'float' or"):
        DARTSNetwork(genotype, precision="int4")
    with pytest.raises(ValueError, match="precision act bits: unsupported bit-width 5"):
        DARTSNetwork(genotype, precision=(2, 5))


def test_drop_path_trains_and_is_off_in_eval(genotype):
    torch.manual_seed(0)
    net = DARTSNetwork(genotype, C=4, layers=3, in_chans=1, drop_path_prob=0.3)
    x = torch.randn(4, 1, 8, 8)
    net(x).sum().backward()
    net.eval()
    assert torch.equal(net(x), net(x))


def _tiny_genotype(precision):
    ops = (("max_pool_3x3", 0), ("dil_conv_3x3", 1))
    return Genotype(ops, (2,), ops, (2,), precision)


def test_cost_report_by_hand():
    # layers=1: one reduction cell; stem 1 -> 2 channels (stem_multiplier=1); cell C = 4; input 4x4.
    prec = (CellPrecision(True, ((4, 2),), ((2, 2),), ((), ((2, 4), (4, 4)))),)
    net = DARTSNetwork(_tiny_genotype(prec), num_classes=3, C=2, layers=1, in_chans=1, stem_multiplier=1)
    r = cost_report(net, 4)
    # MACs: stem 2*1*9*16 = 288 (float); pre0, pre1 4*2*16 = 128 each; dil_conv stride 2 on 2x2:
    # depthwise 4*9*4 = 144, pointwise 4*4*4 = 64; classifier 4*3 = 12 (float).
    assert (r.macs, r.cell_macs) == (288 + 128 + 128 + 144 + 64 + 12, 464)
    cell_bitops = 128 * 4 * 2 + 128 * 2 * 2 + 144 * 2 * 4 + 64 * 4 * 4
    assert r.cell_bitops == cell_bitops == 3712
    assert r.bitops == cell_bitops + (288 + 12) * 32 * 32
    # Size: quantized conv weights at their bits, everything else (stem, BN affine, classifier) at 32.
    assert r.model_size_bits == 18 * 32 + 4 * 32 + 8 * 4 + 8 * 32 + 8 * 2 + 8 * 32 + 36 * 2 + 16 * 4 + 8 * 32 + 15 * 32
    assert r.params == 129
    assert r.mean_weight_bits == pytest.approx((128 * 4 + 128 * 2 + 144 * 2 + 64 * 4) / 464)
    fp32 = cost_report(DARTSNetwork(_tiny_genotype(None), num_classes=3, C=2, layers=1, in_chans=1,
                                    stem_multiplier=1), 4)
    assert fp32.cell_bitops == 464 * 1024 and fp32.model_size_bits == 129 * 32


def test_post_training_quantization_copies_weights_and_recalibrates(genotype):
    torch.manual_seed(0)
    fp = DARTSNetwork(genotype, C=4, layers=3, in_chans=1, precision="float").eval()
    loader = [(torch.randn(16, 1, 8, 8), torch.zeros(16, dtype=torch.long)) for _ in range(3)]
    before = {k: v.clone() for k, v in fp.state_dict().items()}
    q8 = post_training_quantize(fp, (8, 8), loader, num_batches=3)
    assert not q8.training
    assert {(c.weight_bit_width, c.act_bit_width) for c in q8.quantized_layers()} == {(8, 8)}
    assert all(torch.equal(before[k], v) for k, v in fp.state_dict().items())        # the float net is untouched
    assert torch.equal(q8.cells[0].ops[0].op[1].weight, fp.cells[0].ops[0].op[1].weight)
    bn_q, bn_f = q8.cells[1].preprocess1.op[2], fp.cells[1].preprocess1.op[2]
    assert not torch.allclose(bn_q.running_var, bn_f.running_var)                     # re-estimated
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        q2 = post_training_quantize(fp, (2, 2), loader, num_batches=3)
        ref = post_training_quantize(fp, (8, 8), None)        # same statistics as the float net
        fp_out = fp(x)
        err8 = (ref(x) - fp_out).norm() / fp_out.norm()
        err2 = (q2(x) - fp_out).norm() / fp_out.norm()
    assert err8 < err2
    with pytest.raises(ValueError, match="expected a float network"):
        post_training_quantize(q8, (4, 4))
    assert isinstance(q8.quantized_layers()[0], QuantConv2d)


def test_pointwise_after_depthwise_quantizes_signed_inputs(genotype):
    net = DARTSNetwork(genotype, C=4, layers=3, in_chans=1)
    sep = net.cells[0].ops[0]                      # sep_conv_3x3: dw, pw, dw, pw
    assert [c.act_signed for c in conv_layers(sep)] == [False, True, False, True]
    dil = net.cells[0].ops[2]                      # dil_conv_3x3: dw, pw
    assert [c.act_signed for c in conv_layers(dil)] == [False, True]
    assert not any(c.act_signed for c in conv_layers(net.cells[0].preprocess0))


def test_calibrate_input_scales_averages_over_batches(genotype):
    from ws_nas.baselines import calibrate_input_scales

    torch.manual_seed(0)
    net = DARTSNetwork(genotype, C=4, layers=3, in_chans=1).eval()
    first = net.cells[0].preprocess0.op[1]
    seen = []
    first.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    batches = [(torch.randn(8, 1, 8, 8) * s,) for s in (1.0, 3.0)]
    calibrate_input_scales(net, batches, num_batches=2)
    want = sum((2 * x.pow(2).mean()).sqrt() for x in seen) / 2      # post-ReLU inputs: σ = sqrt(2 mean(x²))
    assert first.input_std.item() == pytest.approx(want.item(), rel=1e-5)
    assert first.act_momentum == 0.1 and not first.training and not net.training

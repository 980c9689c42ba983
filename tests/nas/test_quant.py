from __future__ import annotations

import math

import pytest
import torch

from ws_nas.quant import (
    ACT_STEPS,
    SUPPORTED_BITS,
    WEIGHT_STEPS,
    MixedQuantConv2d,
    QuantConv2d,
    check_bits,
    expected_bits,
    mixed_activation,
    mixed_weight,
    quantize_activation,
    quantize_weight,
    weight_scale,
)


def test_hwgq_values_and_straight_through_gradient_by_hand():
    # 2 bits: step 0.538, clip 3 * 0.538 = 1.614; levels 0, 0.538, 1.076, 1.614.
    x = torch.tensor([-1.0, 0.2, 0.3, 1.0, 2.0], requires_grad=True)
    y = quantize_activation(x, 2)
    assert torch.allclose(y, torch.tensor([0.0, 0.0, 0.538, 1.076, 1.614]))
    y.sum().backward()
    # Straight-through inside [0, 1.614], zero where the clamp is active.
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_hwgq_4_and_8_bits_by_hand():
    x = torch.tensor([0.1, 0.2, 3.0])
    # 4 bits: step 0.185 -> round(0.54)=1, round(1.08)=1, clip at 15 * 0.185 = 2.775
    assert torch.allclose(quantize_activation(x, 4), torch.tensor([0.185, 0.185, 2.775]))
    # 8 bits: step 0.016528 -> round(6.05)=6 -> 0.099168
    assert quantize_activation(torch.tensor([0.1]), 8).item() == pytest.approx(6 * 0.016528)


def test_weight_quantizer_values_and_identity_gradient_by_hand():
    w = torch.tensor([-2.0, -0.1, 0.1, 2.0], requires_grad=True)
    std = math.sqrt((4 + 0.01 + 0.01 + 4) / 3)          # unbiased std = 1.63503
    s = 0.996 * std                                     # 2-bit Gaussian step
    q = quantize_weight(w, 2)
    # Mid-rise 2-bit levels ±s/2, ±3s/2; ±2.0 / s = ±1.228 -> ±1.5 s, ±0.1 / s -> ±0.5 s.
    assert torch.allclose(q, torch.tensor([-1.5 * s, -0.5 * s, 0.5 * s, 1.5 * s]), atol=1e-6)
    (q * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    # Straight-through: identity, even for the clamped entries.
    assert w.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_weight_quantizer_uses_at_most_2_to_the_b_levels():
    w = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    for b in (1, 2, 3, 4):
        assert len(torch.unique(quantize_weight(w, b))) == 2**b


@pytest.mark.parametrize("bits", [(2, 4), (2, 4, 8), (4,)])
@pytest.mark.parametrize("signed", [False, True])
def test_fused_mixtures_equal_the_composed_quantizers(bits, signed):
    g = torch.Generator().manual_seed(1)
    gamma = torch.randn(len(bits), dtype=torch.float64, generator=g, requires_grad=True)
    scale = torch.tensor(1.7, dtype=torch.float64)

    def act_fused(x, p, bits):
        return mixed_activation(x, p, bits, scale, signed)

    def act_single(x, b):
        return quantize_activation(x, b, scale, signed)

    for tensor, fused, single in (
        (torch.randn(4, 3, 5, 5, dtype=torch.float64, generator=g) * 3, act_fused, act_single),
        (torch.randn(6, 3, 3, 3, dtype=torch.float64, generator=g), mixed_weight, quantize_weight),
    ):
        xa, xb = tensor.clone().requires_grad_(), tensor.clone().requires_grad_()
        ya = fused(xa, torch.softmax(gamma, 0), bits)
        yb = sum(torch.softmax(gamma, 0)[i] * single(xb, b) for i, b in enumerate(bits))
        up = torch.randn(ya.shape, dtype=torch.float64, generator=g)
        ga = torch.autograd.grad((ya * up).sum(), [xa, gamma])
        gb = torch.autograd.grad((yb * up).sum(), [xb, gamma])
        assert torch.allclose(ya, yb, atol=1e-12)
        for u, v in zip(ga, gb):
            assert torch.allclose(u, v, atol=1e-10)


def test_expected_bits_by_hand():
    gamma = torch.tensor([0.0, math.log(3.0)])          # softmax = (0.25, 0.75)
    assert expected_bits(gamma, (2, 4)).item() == pytest.approx(0.25 * 2 + 0.75 * 4)


def test_mixed_conv_collapses_to_the_fixed_conv_when_one_bit_width_dominates():
    torch.manual_seed(0)
    mixed = MixedQuantConv2d(3, 4, 3, padding=1, bias=False, weight_bits=(2, 4), act_bits=(2, 4))
    fixed = QuantConv2d(3, 4, 3, padding=1, bias=False, weight_bit_width=4, act_bit_width=2)
    fixed.weight.data.copy_(mixed.weight.data)
    with torch.no_grad():
        mixed.gamma_weight.copy_(torch.tensor([-50.0, 50.0]))   # -> 4-bit weights
        mixed.gamma_act.copy_(torch.tensor([50.0, -50.0]))      # -> 2-bit activations
    x = torch.randn(2, 3, 6, 6)
    assert torch.allclose(mixed(x), fixed(x), atol=1e-6)
    assert mixed.chosen_bits() == (4, 2)
    assert mixed.macs == 4 * 3 * 9 * 36
    assert mixed.expected_bitops().item() == pytest.approx(4 * 3 * 9 * 36 * 4 * 2, rel=1e-6)


def test_mixed_conv_precision_gradients_flow_to_gamma():
    torch.manual_seed(0)
    conv = MixedQuantConv2d(2, 2, 1, bias=False, weight_bits=(2, 4, 8))
    conv(torch.randn(3, 2, 4, 4)).pow(2).sum().backward()
    assert conv.gamma_weight.grad is not None and conv.gamma_weight.grad.abs().sum() > 0
    assert conv.gamma_act.grad is not None and conv.gamma_act.grad.abs().sum() > 0
    assert conv.weight.grad is not None


def test_quant_params_reproduce_the_layer_quantizers():
    torch.manual_seed(0)
    for w_bits, a_bits in ((2, 2), (4, 8), (8, 4)):
        conv = QuantConv2d(4, 4, 3, bias=False, weight_bit_width=w_bits, act_bit_width=a_bits)
        wp, ap = conv.weight_quant_params(), conv.act_quant_params()
        assert (wp.bit_width, wp.signed, wp.zero_point) == (w_bits, True, -0.5)
        assert (ap.bit_width, ap.signed, ap.zero_point, ap.scale) == (a_bits, False, 0.0, ACT_STEPS[a_bits])
        assert torch.allclose(wp.apply(conv.weight), quantize_weight(conv.weight, w_bits), atol=1e-6)
        x = torch.randn(1000) * 2
        assert torch.allclose(ap.apply(x), quantize_activation(x, a_bits), atol=1e-6)
    float_conv = QuantConv2d(2, 2, 1)
    assert float_conv.weight_quant_params() is None and float_conv.act_quant_params() is None


def test_bit_width_validation():
    assert check_bits([4, 2]) == (2, 4)
    assert check_bits(8) == (8,)
    with pytest.raises(ValueError, match=r"unsupported bit-width 5; allowed: \(1, 2, 3, 4, 8\)"):
        check_bits([2, 5])
    with pytest.raises(ValueError, match="at least one"):
        check_bits([])
    with pytest.raises(ValueError, match="distinct"):
        check_bits([2, 2])
    with pytest.raises(ValueError, match="weight_bit_width: unsupported bit-width 16"):
        QuantConv2d(2, 2, 1, weight_bit_width=16)
    with pytest.raises(ValueError, match="act_bits: unsupported bit-width 32"):
        MixedQuantConv2d(2, 2, 1, weight_bits=(2, 4), act_bits=(4, 32))
    assert set(SUPPORTED_BITS) >= {2, 4, 8}


def test_signed_activation_quantizer_by_hand():
    # 2 bits, σ = 1: step 0.996, mid-rise levels ±0.498, ±1.494, clipping range [-1.992, 1.992].
    x = torch.tensor([-3.0, -1.2, -0.3, 0.4, 0.9, 1.5, 2.5], requires_grad=True)
    y = quantize_activation(x, 2, signed=True)
    assert torch.allclose(y, torch.tensor([-1.494, -1.494, -0.498, 0.498, 0.498, 1.494, 1.494]))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    # The scale σ multiplies the step: σ = 2 -> levels ±0.996, ±2.988.
    assert torch.allclose(quantize_activation(torch.tensor([0.5, -2.5]), 2, scale=2.0, signed=True),
                          torch.tensor([0.996, -2.988]))


def test_input_scale_is_estimated_in_training_and_frozen_in_eval():
    conv = QuantConv2d(1, 1, 1, bias=False, weight_bit_width=4, act_bit_width=2)
    x = torch.tensor([0.0, 0.0, 1.0, 3.0]).view(1, 1, 2, 2)      # post-ReLU: σ = sqrt(2 · mean(x²)) = sqrt(5)
    conv.train()
    conv(x)
    assert conv.input_std.item() == pytest.approx(0.9 * 1.0 + 0.1 * math.sqrt(5.0), rel=1e-6)
    conv.eval()
    before = conv.input_std.clone()
    conv(x * 10)
    assert torch.equal(conv.input_std, before)
    signed = QuantConv2d(1, 1, 1, bias=False, act_bit_width=2, act_signed=True, act_momentum=None)
    signed.train()
    signed(torch.tensor([-1.0, 1.0, -3.0, 3.0]).view(1, 1, 2, 2))   # signed: σ = sqrt(mean(x²)) = sqrt(5)
    assert signed.input_std.item() == pytest.approx(math.sqrt(5.0), rel=1e-6)   # cumulative: the first batch
    p = signed.act_quant_params()
    assert (p.signed, p.zero_point) == (True, -0.5) and p.scale == pytest.approx(0.996 * math.sqrt(5.0), rel=1e-6)
    with pytest.raises(ValueError, match="act_momentum"):
        QuantConv2d(1, 1, 1, act_bit_width=2, act_momentum=0.0)


def test_weight_step_is_finite_for_one_element_and_constant_weights():
    one = torch.tensor([[[[-0.5]]]])
    assert torch.isfinite(weight_scale(one, 2)) and weight_scale(one, 2) > 0
    # s = 0.996 · rms = 0.498; levels ±0.249, ±0.747: -0.5 lies nearer -3s/2 (0.247) than -s/2 (0.251).
    assert quantize_weight(one, 2).item() == pytest.approx(-1.5 * WEIGHT_STEPS[2] * 0.5)
    constant = torch.full((4, 1, 1, 1), 0.25)
    assert quantize_weight(constant, 4).isfinite().all()

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from ws_core.elastic import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticDepthwiseConv2d,
    ElasticLinear,
    ElasticSqueezeExcite,
    ElasticStage,
    _live_taps,
    centre_slice,
    depthwise_conv2d,
    make_divisible,
    sorted_order,
)


def test_make_divisible_and_centre_slice_by_hand():
    assert make_divisible(16 * 0.35) == 8
    assert make_divisible(80 * 0.35) == 32  # 28 rounds up to 32
    assert make_divisible(40 * 6) == 240
    assert make_divisible(13) == 16 and make_divisible(11) == 16 and make_divisible(3) == 8
    assert centre_slice(7, 3) == slice(2, 5)
    assert centre_slice(7, 5) == slice(1, 6)
    assert centre_slice(5, 5) == slice(0, 5)


def test_elastic_conv_uses_leading_channels():
    torch.manual_seed(0)
    conv = ElasticConv2d(8, 6, 3, stride=2, bias=True)
    conv.configure(5, 4)
    x = torch.randn(2, 5, 9, 9)
    ref = F.conv2d(x, conv.weight[:4, :5], conv.bias[:4], stride=2, padding=1)
    torch.testing.assert_close(conv(x), ref)
    static = conv.to_static()
    assert isinstance(static, torch.nn.Conv2d) and static.weight.shape == (4, 5, 3, 3)
    torch.testing.assert_close(static(x), ref)
    assert conv.active_slices()["weight"] == (slice(0, 4), slice(0, 5), slice(0, 3), slice(0, 3))
    assert conv.active_parameter_shapes() == {"weight": (4, 5, 3, 3), "bias": (4,)}


def test_depthwise_centre_crop_by_hand():
    conv = ElasticDepthwiseConv2d(4, (3, 5, 7))
    with torch.no_grad():
        conv.weight.copy_(torch.arange(4 * 49, dtype=torch.float32).view(4, 1, 7, 7))
    conv.configure(3, 3)
    w = conv.active_weight()
    assert w.shape == (3, 1, 3, 3)
    # channel 0, the 3x3 centre of a 7x7 arange: rows 2..4, cols 2..4
    assert w[0, 0].tolist() == [[16, 17, 18], [23, 24, 25], [30, 31, 32]]
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(conv(x), F.conv2d(x, w, padding=1, groups=3))
    torch.testing.assert_close(conv.to_static()(x), conv(x))
    assert conv.active_slices()["weight"] == (slice(0, 3), slice(0, 1), slice(2, 5), slice(2, 5))


def test_live_taps_by_hand():
    # 7x7 'same' conv on a 1-pixel axis: only the centre tap reads the input, no padding needed
    assert _live_taps(1, 7, 1, 3) == (3, 3, 0, 0)
    # on 2 pixels: taps 2..4 (offsets -1, 0, +1), one pixel of padding each side
    assert _live_taps(2, 7, 1, 3) == (2, 4, 1, 1)
    # stride 2 on 2 pixels: one output reading input 0..1 through taps 3..4, no padding
    assert _live_taps(2, 7, 2, 3) == (3, 4, 0, 0)
    # stride 2 on 3 pixels: output o reads input 2o-3+t; taps 1..5 reach input 0..2 for some o;
    # output 0 then reads padded -2..2 and output 1 reads 0..4: 2 padding before, 2 after
    assert _live_taps(3, 7, 2, 3) == (1, 5, 2, 2)
    # a kernel that fits keeps every tap
    assert _live_taps(8, 3, 1, 1) == (0, 2, 1, 1)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
def test_depthwise_conv2d_equals_conv2d_with_all_taps(stride, kernel):
    """Dropping taps that only read padding changes neither outputs nor gradients."""
    torch.manual_seed(kernel + 10 * stride)
    for h, w in [(1, 1), (2, 2), (3, 2), (1, 4), (5, 5), (8, 8), (9, 6)]:
        for padding in sorted({kernel // 2, 0}):
            if h + 2 * padding < kernel or w + 2 * padding < kernel:
                continue  # no output at all
            x = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
            wt = torch.randn(3, 1, kernel, kernel, dtype=torch.float64, requires_grad=True)
            ref = F.conv2d(x, wt, stride=stride, padding=padding, groups=3)
            gx, gw = torch.autograd.grad(ref.square().sum(), (x, wt))
            out = depthwise_conv2d(x, wt, stride, padding)
            assert out.shape == ref.shape, (h, w, padding)
            torch.testing.assert_close(out, ref)
            ox, ow = torch.autograd.grad(out.square().sum(), (x, wt))
            torch.testing.assert_close(ox, gx)
            torch.testing.assert_close(ow, gw)


def test_elastic_depthwise_on_maps_smaller_than_the_kernel():
    conv = ElasticDepthwiseConv2d(6, (3, 5, 7), stride=2)
    conv.configure(4, 7)
    x = torch.randn(3, 4, 2, 2)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.active_weight(), stride=2, padding=3, groups=4))
    torch.testing.assert_close(conv.to_static()(x), conv(x))


def test_kernel_transform_identity_init_equals_centre_crop_and_chains():
    torch.manual_seed(0)
    plain = ElasticDepthwiseConv2d(4, (3, 5, 7))
    tf = ElasticDepthwiseConv2d(4, (3, 5, 7), kernel_transform=True)
    tf.load_state_dict(plain.state_dict(), strict=False)
    assert set(tf.elastic_only) == {"kernel_transform.7to5", "kernel_transform.5to3"}
    assert tf.kernel_transform["7to5"].shape == (25, 25) and tf.kernel_transform["5to3"].shape == (9, 9)
    for k in (7, 5, 3):
        plain.configure(4, k)
        tf.configure(4, k)
        torch.testing.assert_close(tf.active_weight(), plain.active_weight())
    # a non-identity transform: 3x3 = centre3(centre5(W) · M75ᵀ) · M53ᵀ, by hand
    with torch.no_grad():
        tf.kernel_transform["7to5"].copy_(torch.randn(25, 25))
        tf.kernel_transform["5to3"].copy_(torch.randn(9, 9))
    w = tf.weight.detach()
    k5 = (w[:, :, 1:6, 1:6].reshape(4, 25) @ tf.kernel_transform["7to5"].detach().T).view(4, 1, 5, 5)
    k3 = (k5[:, :, 1:4, 1:4].reshape(4, 9) @ tf.kernel_transform["5to3"].detach().T).view(4, 1, 3, 3)
    tf.configure(4, 3)
    torch.testing.assert_close(tf.active_weight(), k3)
    # the transform reads the 5x5 centre of the 7x7 weight and both matrices
    slices = tf.active_slices()
    assert slices["weight"][2] == slice(1, 6)
    assert set(slices) == {"weight", "kernel_transform.7to5", "kernel_transform.5to3"}
    tf.configure(4, 5)
    assert set(tf.active_slices()) == {"weight", "kernel_transform.7to5"}
    # gradients reach the transform matrices
    tf.configure(4, 3)
    tf(torch.randn(1, 4, 5, 5)).sum().backward()
    assert tf.kernel_transform["5to3"].grad is not None and tf.kernel_transform["7to5"].grad is not None


def test_depthwise_rejects_even_kernels():
    with pytest.raises(ValueError, match="odd"):
        ElasticDepthwiseConv2d(4, (3, 4))


def test_batchnorm_slices_statistics_in_place():
    torch.manual_seed(0)
    bn = ElasticBatchNorm2d(6)
    with torch.no_grad():
        bn.running_mean.copy_(torch.arange(6.0))
    bn.configure(4)
    x = torch.randn(8, 4, 3, 3) * 2 + 1
    ref = torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        ref.running_mean.copy_(torch.arange(4.0))
    torch.testing.assert_close(bn(x), ref(x))
    torch.testing.assert_close(bn.running_mean[:4], ref.running_mean)
    torch.testing.assert_close(bn.running_var[:4], ref.running_var)
    assert bn.running_mean[4:].tolist() == [4.0, 5.0]  # channels it does not read are untouched
    assert bn.running_var[4:].tolist() == [1.0, 1.0]
    bn.eval()
    ref.eval()
    torch.testing.assert_close(bn(x), ref(x))
    torch.testing.assert_close(bn.to_static()(x), ref(x))


def test_batchnorm_cumulative_average_when_momentum_none():
    bn = ElasticBatchNorm2d(5, momentum=None)
    bn.configure(3)
    batches = [torch.randn(4, 3, 2, 2) + i for i in range(3)]
    for b in batches:
        bn(b)
    means = torch.stack([b.mean((0, 2, 3)) for b in batches]).mean(0)
    torch.testing.assert_close(bn.running_mean[:3], means)


def test_linear_and_se():
    torch.manual_seed(0)
    lin = ElasticLinear(10, 4)
    lin.configure(6)
    x = torch.randn(3, 6)
    torch.testing.assert_close(lin(x), F.linear(x, lin.weight[:, :6], lin.bias))
    torch.testing.assert_close(lin.to_static()(x), lin(x))

    se = ElasticSqueezeExcite(48)
    assert se.reduce.out_channels == make_divisible(48 // 4) == 16
    se.configure(24)
    assert (se.reduce.active_in_channels, se.reduce.active_out_channels) == (24, 8)
    x = torch.randn(2, 24, 5, 5)
    s = x.mean((2, 3), keepdim=True)
    s = F.conv2d(F.relu(F.conv2d(s, se.reduce.weight[:8, :24], se.reduce.bias[:8])),
                 se.expand.weight[:24, :8], se.expand.bias[:24])
    torch.testing.assert_close(se(x), x * F.hardsigmoid(s))


def test_stage_runs_first_blocks():
    blocks = [torch.nn.Linear(2, 2) for _ in range(3)]
    stage = ElasticStage(blocks)
    stage.configure(2)
    x = torch.randn(1, 2)
    torch.testing.assert_close(stage(x), blocks[1](blocks[0](x)))
    assert stage.active_blocks == blocks[:2]


def test_sorted_order_keeps_nested_groups():
    importance = torch.tensor([1.0, 5.0, 3.0, 9.0, 0.5, 7.0])
    assert sorted_order(importance).tolist() == [3, 5, 1, 2, 0, 4]
    # groups [0, 2) and [2, 6) are sorted within themselves only
    assert sorted_order(importance, nested_widths=(2, 6)).tolist() == [1, 0, 3, 5, 2, 4]


@pytest.mark.parametrize("name", ["ws_ofa_mbv3_035_32", "ws_ofa_resnet50_025_32"])
@pytest.mark.parametrize("nested", [False, True])
def test_channel_sorting_preserves_max_net_function(name, nested):
    torch.manual_seed(0)
    net = timm.create_model(name, num_classes=5)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.momentum = 0.0  # train-mode forwards below must not move the running statistics
    x = torch.randn(4, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        before_eval = net(x)
        net.train()
        before_train = net.forward_features(x)
    pw_before = [b.conv_pw.weight.clone() if hasattr(b, "conv_pw") else b.conv1.weight.clone()
                 for s in net.stages for b in s.blocks]
    assert net.sort_channels(nested=nested) == sum(len(s.blocks) for s in net.stages)
    with torch.no_grad():
        after_train = net.forward_features(x)
        net.eval()
        after_eval = net(x)
    torch.testing.assert_close(after_eval, before_eval, atol=1e-5, rtol=1e-4)
    # batch statistics over 4 samples amplify summation-order differences a little: compare norms
    assert (after_train - before_train).norm() / before_train.norm() < 1e-4  # a wrong permutation gives ~1
    pw_after = [b.conv_pw.weight if hasattr(b, "conv_pw") else b.conv1.weight for s in net.stages for b in s.blocks]
    assert any(not torch.equal(a, b) for a, b in zip(pw_before, pw_after))  # something moved


def test_sorting_puts_important_channels_first():
    torch.manual_seed(0)
    net = timm.create_model("ws_ofa_mbv3_035_32", num_classes=5)
    net.sort_channels()
    for stage in net.stages:
        for block in stage.blocks:
            imp = block.conv_pwl.weight.detach().abs().sum(dim=(0, 2, 3))
            assert torch.all(imp[:-1] >= imp[1:])

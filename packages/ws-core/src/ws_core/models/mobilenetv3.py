"""OFA MobileNetV3 SuperNet (Cai et al., "Once-for-All", ICLR 2020; ``ofa_mbv3.py``).

Fixed stem (3×3 conv, h-swish) and a fixed first block (depthwise-separable, expand 1), then 5
elastic stages of up to 4 MBConv blocks: depth {2,3,4}, expand ratio {3,4,6}, kernel {3,5,7} per
block, SE and h-swish where MobileNetV3 has them. ImageNet variants add elastic resolution
128–224 (step 4); the ``_32`` variants have a CIFAR stem (stride 1 stem, stage strides 1,2,2,1,2).

Registered in timm: ``timm.create_model("ws_ofa_mbv3_100", num_classes=10)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from ..config import SubNetConfig
from ..elastic import (
    ElasticBatchNorm2d,
    ElasticBlock,
    ElasticConv2d,
    ElasticDepthwiseConv2d,
    ElasticSqueezeExcite,
    ElasticStage,
    l1_importance,
    make_divisible,
    permute_channels_,
    sorted_order,
)
from ..ofa import OFA_TAG, checkpoint_filter_fn, ofa_model_kwargs, ofa_pretrained_cfg
from ..space import Dimension, SearchSpace
from ..supernet import ClassifierHead, SuperNet
from ._common import FASHION_MNIST_MEAN, FASHION_MNIST_STD, cifar_cfg, imagenet_cfg, ofa_init_

__all__ = ["MBConvBlock", "MBConvSuperNet", "OFAMobileNetV3"]

# OFA constants (ofa_mbv3.py): stem, first block, 5 elastic stages, final expand, feature mix.
BASE_STAGE_WIDTH = (16, 16, 24, 40, 80, 112, 160, 960, 1280)
STAGE_ACT = ("relu", "relu", "h_swish", "h_swish", "h_swish")
STAGE_SE = (False, True, False, True, True)
IMAGENET_STRIDES = (2, 2, 2, 1, 2)
CIFAR_STRIDES = (1, 2, 2, 1, 2)


_ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "h_swish": nn.Hardswish}  # OFA's act_func names


def _act(name: str) -> nn.Module:
    return _ACTS[name](inplace=True)


class ConvBnAct(nn.Sequential):
    """Static conv → BN → activation (the fixed stem, final expand and feature-mix layers)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, act: str = "relu",
                 bn_eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=bn_eps)
        self.act = _act(act)


class DepthwiseSeparable(nn.Module):
    """OFA's fixed first block: depthwise 3×3 → BN → act → pointwise → BN, residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, act: str, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch, eps=bn_eps)
        self.act = _act(act)
        self.conv_pwl = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=bn_eps)
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv_pwl(self.act(self.bn1(self.conv_dw(x)))))
        return out + x if self.has_skip else out


class MBConvBlock(ElasticBlock, nn.Module):
    """Elastic inverted bottleneck (OFA ``DynamicMBConvLayer`` + identity shortcut).

    1×1 expand → BN → act → k×k depthwise → BN → act → [SE] → 1×1 project → BN; the middle width is
    ``make_divisible(round(in_channels × expand_ratio), 8)``. ``act``: OFA's ``act_func`` (``relu``,
    ``relu6``, ``h_swish``); ``bn_eps``: OFA's ``bn_param[1]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratios: Sequence[float],
        kernel_sizes: Sequence[int],
        stride: int,
        act: str,
        use_se: bool,
        kernel_transform: bool = False,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.expand_ratios = tuple(sorted(expand_ratios))
        self._mid = {e: make_divisible(round(in_channels * e), 8) for e in self.expand_ratios}
        max_mid = self._mid[self.expand_ratios[-1]]
        self.conv_pw = ElasticConv2d(in_channels, max_mid, 1)
        self.bn1 = ElasticBatchNorm2d(max_mid, eps=bn_eps)
        self.act1 = _act(act)
        self.conv_dw = ElasticDepthwiseConv2d(max_mid, kernel_sizes, stride, kernel_transform)
        self.bn2 = ElasticBatchNorm2d(max_mid, eps=bn_eps)
        self.act2 = _act(act)
        self.se = ElasticSqueezeExcite(max_mid) if use_se else nn.Identity()
        self.conv_pwl = ElasticConv2d(max_mid, out_channels, 1)
        self.bn3 = ElasticBatchNorm2d(out_channels, eps=bn_eps)
        self.has_skip = stride == 1 and in_channels == out_channels

    def _configure(self, expand_ratio: float, kernel_size: int) -> None:
        mid = self._mid[expand_ratio]
        self.conv_pw.configure(self.in_channels, mid)
        self.bn1.configure(mid)
        self.conv_dw.configure(mid, kernel_size)
        self.bn2.configure(mid)
        if isinstance(self.se, ElasticSqueezeExcite):
            self.se.configure(mid)
        self.conv_pwl.configure(mid, self.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv_pw(x)))
        out = self.se(self.act2(self.bn2(self.conv_dw(out))))
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.has_skip else out

    def nested_widths(self) -> list[int]:
        return [self._mid[e] for e in self.expand_ratios]

    def sort_channels(self, nested_widths: Sequence[int] = ()) -> None:
        """Sort middle channels by L1 importance in the projection conv (OFA ``re_organize_middle_weights``)."""
        idx = sorted_order(l1_importance(self.conv_pwl.weight, dim=1), nested_widths)
        permute_channels_(self.conv_pwl, idx, dim=1)
        if isinstance(self.se, ElasticSqueezeExcite):
            permute_channels_(self.se.expand, idx, dim=0)
            permute_channels_(self.se.reduce, idx, dim=1)
            self.se.sort_mid_channels()
        permute_channels_(self.bn2, idx)
        permute_channels_(self.conv_dw, idx, dim=0)
        permute_channels_(self.bn1, idx)
        permute_channels_(self.conv_pw, idx, dim=0)


class MBConvSuperNet(SuperNet):
    """Shared body of OFA's MBConv SuperNets (MobileNetV3, ProxylessNAS): elastic stages of
    :class:`MBConvBlock`, each block's expand ratio and kernel size read from the config's block slots and
    each stage's depth from ``space.active_blocks`` (so stages of fixed depth run all their blocks)."""

    @staticmethod
    def mbconv_space(
        resolutions: Sequence[int],
        depths: Sequence[int],
        expand_ratios: Sequence[float],
        kernel_sizes: Sequence[int],
        stage_blocks: Sequence[int],
        base_depth: Sequence[int] | None = None,
    ) -> SearchSpace:
        """OFA's MBConv space: resolution per net, depth per stage, expand ratio and kernel per block slot."""
        return SearchSpace(
            [
                Dimension("resolution", tuple(resolutions), "net"),
                Dimension("depth", tuple(depths), "stage"),
                Dimension("expand", tuple(expand_ratios), "block"),
                Dimension("kernel", tuple(kernel_sizes), "block"),
            ],
            stage_blocks=stage_blocks,
            base_depth=base_depth,
        )

    def _build_stages(
        self,
        in_ch: int,
        widths: Sequence[int],
        strides: Sequence[int],
        stage_blocks: Sequence[int],
        acts: Sequence[str],
        use_se: Sequence[bool],
        expand_ratios: Sequence[float],
        kernel_sizes: Sequence[int],
        kernel_transform: bool,
        bn_eps: float,
        reduction: int,
    ) -> int:
        """Build ``self.stages`` (one :class:`ElasticStage` per entry of ``widths``), append one timm
        ``feature_info`` entry per stage (its max channels) and return the last stage's channels."""
        stages, slot = [], 0
        for s, (out_ch, stride, n, act, se) in enumerate(zip(widths, strides, stage_blocks, acts, use_se)):
            blocks = []
            for j in range(n):
                blocks.append(MBConvBlock(in_ch, out_ch, expand_ratios, kernel_sizes, stride if j == 0 else 1,
                                          act, se, kernel_transform, bn_eps))
                in_ch = out_ch
            stages.append(ElasticStage(blocks))
            reduction *= stride
            self.feature_info.append(dict(num_chs=out_ch, reduction=reduction, module=f"stages.{s}"))
        self.stages = nn.Sequential(*stages)
        # (stage, [(block, slot index)]) as plain lists for the actuation path
        self._routing = []
        for stage in stages:
            self._routing.append((stage, [(block, slot + j) for j, block in enumerate(stage.blocks)]))
            slot += len(stage.blocks)
        return in_ch

    def _configure(self, cfg: SubNetConfig) -> None:
        expand, kernel = cfg["expand"], cfg["kernel"]
        for (stage, slots), d in zip(self._routing, self.space.active_blocks(cfg)):
            stage.configure(d)
            for block, i in slots[:d]:
                block.configure(expand[i], kernel[i])


class OFAMobileNetV3(MBConvSuperNet):
    """The OFA MobileNetV3 SuperNet.

    Args:
        num_classes: classifier outputs.
        in_chans: input channels.
        width_mult: base width multiplier (1.0 = OFA's 7.7M-parameter supernet).
        depths, expand_ratios, kernel_sizes: the elastic choices (OFA: {2,3,4}, {3,4,6}, {3,5,7}).
        resolutions: allowed input sizes (the resolution dimension).
        cifar_stem: 32×32 inputs (stride-1 stem, stage strides 1,2,2,1,2).
        stem_stride: stride of the stem conv (``None``: 1 with ``cifar_stem``, else 2); 2 with the CIFAR
            stage strides suits 28×28 inputs (Fashion-MNIST): 14×14 maps after the stem.
        kernel_transform: OFA's learned kernel-transform matrices instead of a plain centre crop.
        drop_rate: dropout before the classifier.

    Example::

        >>> import timm, ws_core
        >>> net = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10)
        >>> net.space.size() == (9**2 + 9**3 + 9**4) ** 5
        True
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        depths: Sequence[int] = (2, 3, 4),
        expand_ratios: Sequence[float] = (3, 4, 6),
        kernel_sizes: Sequence[int] = (3, 5, 7),
        resolutions: Sequence[int] = tuple(range(128, 225, 4)),
        cifar_stem: bool = False,
        kernel_transform: bool = False,
        drop_rate: float = 0.1,
        stem_stride: int | None = None,
    ) -> None:
        super().__init__()
        if stem_stride is None:
            stem_stride = 1 if cifar_stem else 2
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be one of [1, 2], got {stem_stride!r}")
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.space = self.mbconv_space(resolutions, depths, expand_ratios, kernel_sizes, (max(depths),) * 5)
        widths = [make_divisible(w * width_mult, 8) for w in BASE_STAGE_WIDTH[:-2]]
        final_expand = make_divisible(BASE_STAGE_WIDTH[-2] * width_mult, 8)
        last_channel = make_divisible(BASE_STAGE_WIDTH[-1] * width_mult, 8)
        strides = CIFAR_STRIDES if cifar_stem else IMAGENET_STRIDES

        self.stem = nn.Sequential()
        self.stem.add_module("conv", ConvBnAct(in_chans, widths[0], 3, stem_stride, "h_swish"))
        self.stem.add_module("block", DepthwiseSeparable(widths[0], widths[1], 1, "relu"))
        # timm feature_info: the stem, then each stage (its last active block); the max SubNet's channels
        self.feature_info = [dict(num_chs=widths[1], reduction=stem_stride, module="stem")]
        in_ch = self._build_stages(widths[1], widths[2:], strides, self.space.stage_blocks, STAGE_ACT, STAGE_SE,
                                   expand_ratios, kernel_sizes, kernel_transform, 1e-5, stem_stride)
        self.num_features = last_channel
        self.head = ClassifierHead(
            in_ch, num_classes,
            features=ConvBnAct(in_ch, final_expand, 1, act="h_swish"),
            pre_logits=nn.Sequential(nn.Conv2d(final_expand, last_channel, 1, bias=False), nn.Hardswish(inplace=True)),
            num_features=last_channel, drop_rate=drop_rate,
        )
        ofa_init_(self)
        self.activate(self.space.max())


def _create(variant: str, pretrained: bool = False, **kwargs) -> OFAMobileNetV3:
    # the ofa_in1k tag builds the SuperNet OFA's checkpoint needs (kernel_transform=True); checkpoint_filter_fn
    # maps OFA's state dict onto it (ws_core.ofa)
    kwargs = ofa_model_kwargs(variant, kwargs)
    # features_only=True: timm's FeatureGetterNet over forward_intermediates; default: the stem and all 5 stages
    return build_model_with_cfg(OFAMobileNetV3, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=(0, 1, 2, 3, 4, 5), feature_cls="getter"), **kwargs)


default_cfgs = generate_default_cfgs({
    # OFA's trained SuperNets first, then the untagged cfg marked default ("*"): the bare name stays a SuperNet
    # to train (no weights); "<name>.ofa_in1k" is OFA's (ws_core.ofa)
    f"ws_ofa_mbv3_100.{OFA_TAG}": ofa_pretrained_cfg("ws_ofa_mbv3_100", first_conv="stem.conv.conv",
                                                     classifier="head.classifier"),
    "ws_ofa_mbv3_100.*": imagenet_cfg("stem.conv.conv"),
    f"ws_ofa_mbv3_120.{OFA_TAG}": ofa_pretrained_cfg("ws_ofa_mbv3_120", first_conv="stem.conv.conv",
                                                     classifier="head.classifier"),
    "ws_ofa_mbv3_120.*": imagenet_cfg("stem.conv.conv"),
    "ws_ofa_mbv3_100_32": cifar_cfg("stem.conv.conv"),
    "ws_ofa_mbv3_035_32": cifar_cfg("stem.conv.conv"),
    "ws_ofa_mbv3_035_28": imagenet_cfg("stem.conv.conv", num_classes=10, input_size=(3, 28, 28), pool_size=(2, 2),
                                       crop_pct=1.0, mean=FASHION_MNIST_MEAN * 3, std=FASHION_MNIST_STD * 3),
})


@register_model
def ws_ofa_mbv3_100(pretrained: bool = False, **kwargs) -> OFAMobileNetV3:
    """OFA MobileNetV3 (width 1.0), 224×224, elastic resolution 128–224."""
    return _create("ws_ofa_mbv3_100", pretrained, **dict(width_mult=1.0, **kwargs))


@register_model
def ws_ofa_mbv3_120(pretrained: bool = False, **kwargs) -> OFAMobileNetV3:
    """OFA MobileNetV3 (width 1.2, OFA's ``ofa_mbv3_d234_e346_k357_w1.2``), 224×224, elastic resolution 128–224."""
    return _create("ws_ofa_mbv3_120", pretrained, **dict(width_mult=1.2, **kwargs))


@register_model
def ws_ofa_mbv3_100_32(pretrained: bool = False, **kwargs) -> OFAMobileNetV3:
    """OFA MobileNetV3 (width 1.0) for 32×32 inputs (CIFAR stem), as in DεpS's ``OFAMobileNetV3_32``."""
    args = dict(width_mult=1.0, cifar_stem=True, resolutions=(32,))
    return _create("ws_ofa_mbv3_100_32", pretrained, **dict(args, **kwargs))


@register_model
def ws_ofa_mbv3_035_32(pretrained: bool = False, **kwargs) -> OFAMobileNetV3:
    """OFA MobileNetV3 space at width 0.35 for 32×32 inputs: same 2×10¹⁹ SubNets, fast on CPU."""
    args = dict(width_mult=0.35, cifar_stem=True, resolutions=(32,))
    return _create("ws_ofa_mbv3_035_32", pretrained, **dict(args, **kwargs))


@register_model
def ws_ofa_mbv3_035_28(pretrained: bool = False, **kwargs) -> OFAMobileNetV3:
    """OFA MobileNetV3 at width 0.35 for 28×28 inputs (Fashion-MNIST), the main job's SuperNet: stride-2 stem,
    CIFAR stage strides (maps 14, 7, 4, 4, 2), depth {1,2,3} per stage instead of OFA's {2,3,4} (a 15-block
    max net trains about 1.6× faster on CPU than a 20-block one), expand {3,4,6}, kernel {3,5,7}, and
    elastic resolution 16–28 (step 4): (9 + 81 + 729)⁵ × 4 ≈ 1.5 × 10¹⁵ SubNets from 0.35 to 6.3 MMACs."""
    args = dict(width_mult=0.35, cifar_stem=True, stem_stride=2, resolutions=(16, 20, 24, 28), depths=(1, 2, 3))
    return _create("ws_ofa_mbv3_035_28", pretrained, **dict(args, **kwargs))

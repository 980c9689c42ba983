"""OFA ResNet SuperNet (Cai et al., "Once-for-All", ``ofa_resnets.py``: ``ofa_resnet50``).

ResNet-50-D style: a 3-conv stem, then 4 stages of bottleneck blocks with base depths (2, 2, 4, 2)
plus an elastic *extra* depth {0, 1, 2}, an elastic expand ratio {0.2, 0.25, 0.35} per block (middle
width = ``make_divisible(round(out × e), 8)``) and an elastic width multiplier {0.65, 0.8, 1.0} per
stage; shortcuts downsample with avg-pool + 1×1 conv. The input stem is elastic as in OFA: its middle
conv is a residual conv block that runs or is skipped (``stem_depth`` 1 / 0; OFA's ``d[0]``), and its
two widths are separate choices — ``stem_mid_width`` for the first two convs (OFA's ``w[0]``),
``stem_width`` for the third (``w[1]``). Multipliers that give the same channels are one choice (OFA's
0.65 and 0.8 of the 32-channel middle width both give 24: ``stem_mid_width`` ∈ {0.65, 1.0}), so every
OFA SubNet has exactly one config (``ws_core.ofa.from_ofa_arch``).
The ``_32`` variants have a CIFAR stem (stride-1 stem, no max-pool).
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
    ElasticLinear,
    ElasticStage,
    l1_importance,
    make_divisible,
    permute_channels_,
    sorted_order,
)
from ..ofa import OFA_TAG, checkpoint_filter_fn, ofa_model_kwargs, ofa_pretrained_cfg
from ..space import Dimension, SearchSpace
from ..supernet import ClassifierHead, SuperNet
from ._common import cifar_cfg, imagenet_cfg, ofa_init_

__all__ = ["BottleneckBlock", "OFAResNet", "StemResidualConv"]

BASE_DEPTH = (2, 2, 4, 2)
STAGE_WIDTH = (256, 512, 1024, 2048)
STEM_WIDTH = 64


class ConvBnReLU(ElasticBlock, nn.Module):
    """Elastic conv → BN → ReLU (the stem layers)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = ElasticConv2d(in_ch, out_ch, kernel, stride)
        self.bn = ElasticBatchNorm2d(out_ch)
        self.act = nn.ReLU(inplace=True)

    def _configure(self, in_ch: int, out_ch: int) -> None:
        self.conv.configure(in_ch, out_ch)
        self.bn.configure(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class StemResidualConv(ConvBnReLU):
    """OFA's skippable input-stem block: ``x + relu(bn(conv3×3(x)))`` (``ResidualBlock`` with an identity)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + super().forward(x)


def _distinct(channels: dict[float, int]) -> tuple[float, ...]:
    """The smallest multiplier of each distinct channel count: multipliers giving equal widths are one choice."""
    out: dict[int, float] = {}
    for w in sorted(channels):
        out.setdefault(channels[w], w)
    return tuple(out.values())


class BottleneckBlock(ElasticBlock, nn.Module):
    """Elastic ResNet bottleneck (OFA ``DynamicResNetBottleneckBlock``, ``downsample_mode='avgpool_conv'``)."""

    def __init__(self, in_channels: int, out_channels: int, expand_ratios: Sequence[float], stride: int) -> None:
        super().__init__()
        self.expand_ratios = tuple(sorted(expand_ratios))
        max_mid = make_divisible(round(out_channels * self.expand_ratios[-1]), 8)
        self.conv1 = ElasticConv2d(in_channels, max_mid, 1)
        self.bn1 = ElasticBatchNorm2d(max_mid)
        self.conv2 = ElasticConv2d(max_mid, max_mid, 3, stride)
        self.bn2 = ElasticBatchNorm2d(max_mid)
        self.conv3 = ElasticConv2d(max_mid, out_channels, 1)
        self.bn3 = ElasticBatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)
        if stride == 1 and in_channels == out_channels:
            self.downsample = nn.Identity()
        else:
            self.downsample = nn.Sequential()
            if stride > 1:
                self.downsample.add_module("pool", nn.AvgPool2d(stride, stride, ceil_mode=True))
            self.downsample.add_module("conv", ElasticConv2d(in_channels, out_channels, 1))
            self.downsample.add_module("bn", ElasticBatchNorm2d(out_channels))
        self.out_channels = out_channels

    def _configure(self, in_ch: int, out_ch: int, expand_ratio: float) -> None:
        mid = make_divisible(round(out_ch * expand_ratio), 8)
        self.conv1.configure(in_ch, mid)
        self.bn1.configure(mid)
        self.conv2.configure(mid, mid)
        self.bn2.configure(mid)
        self.conv3.configure(mid, out_ch)
        self.bn3.configure(out_ch)
        if isinstance(self.downsample, nn.Sequential):
            self.downsample.conv.configure(in_ch, out_ch)
            self.downsample.bn.configure(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act(out + self.downsample(x))

    def nested_widths(self) -> list[int]:
        return [make_divisible(round(self.out_channels * e), 8) for e in self.expand_ratios]

    def sort_channels(self, nested_widths: Sequence[int] = ()) -> None:
        """OFA ``re_organize_middle_weights``: sort conv2's outputs by conv3, then conv1's by conv2."""
        idx = sorted_order(l1_importance(self.conv3.weight, dim=1), nested_widths)
        permute_channels_(self.conv3, idx, dim=1)
        permute_channels_(self.bn2, idx)
        permute_channels_(self.conv2, idx, dim=0)
        idx = sorted_order(l1_importance(self.conv2.weight, dim=1), nested_widths)
        permute_channels_(self.conv2, idx, dim=1)
        permute_channels_(self.bn1, idx)
        permute_channels_(self.conv1, idx, dim=0)


class OFAResNet(SuperNet):
    """The OFA ResNet-50 SuperNet.

    Args:
        num_classes: classifier outputs.
        in_chans: input channels.
        base_width: scale of all widths (1.0 = ResNet-50; smaller for fast CPU variants).
        depths: extra blocks per stage on top of ``(2, 2, 4, 2)`` (OFA: {0, 1, 2}).
        expand_ratios: bottleneck middle-width ratios (OFA: {0.2, 0.25, 0.35}).
        width_mults: width multipliers per stage and for the stem (OFA: {0.65, 0.8, 1.0}).
        resolutions: allowed input sizes.
        cifar_stem: 32×32 inputs (stride-1 stem, no max-pool).
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        base_width: float = 1.0,
        depths: Sequence[int] = (0, 1, 2),
        expand_ratios: Sequence[float] = (0.2, 0.25, 0.35),
        width_mults: Sequence[float] = (0.65, 0.8, 1.0),
        resolutions: Sequence[int] = tuple(range(128, 225, 4)),
        cifar_stem: bool = False,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        max_extra = max(depths)
        self._stem_widths = {w: make_divisible(STEM_WIDTH * base_width * w, 8) for w in width_mults}
        self._stem_mid = {w: make_divisible(c // 2, 8) for w, c in self._stem_widths.items()}
        self.space = SearchSpace(
            [
                Dimension("resolution", tuple(resolutions), "net"),
                Dimension("stem_depth", (0, 1), "net"),
                Dimension("stem_mid_width", _distinct(self._stem_mid), "net"),
                Dimension("stem_width", _distinct(self._stem_widths), "net"),
                Dimension("depth", tuple(depths), "stage"),
                Dimension("width", tuple(width_mults), "stage"),
                Dimension("expand", tuple(expand_ratios), "block"),
            ],
            stage_blocks=tuple(b + max_extra for b in BASE_DEPTH),
            base_depth=BASE_DEPTH,
        )
        self._stage_widths = [{w: make_divisible(c * base_width * w, 8) for w in width_mults} for c in STAGE_WIDTH]
        stem_out, stem_mid = max(self._stem_widths.values()), max(self._stem_mid.values())

        self.stem = nn.Sequential()
        self.stem.add_module("conv1", ConvBnReLU(in_chans, stem_mid, 3, 1 if cifar_stem else 2))
        self.stem.add_module("conv2", ElasticStage([StemResidualConv(stem_mid)]))  # stem_depth: 0 skips it
        self.stem.add_module("conv3", ConvBnReLU(stem_mid, stem_out, 3, 1))
        if not cifar_stem:
            self.stem.add_module("pool", nn.MaxPool2d(3, 2, 1))
        stages, in_ch = [], stem_out
        # timm feature_info: the stem, then each stage (its last active block); the max SubNet's channels
        reduction = 1 if cifar_stem else 4
        self.feature_info = [dict(num_chs=stem_out, reduction=reduction, module="stem")]
        for s, widths in enumerate(self._stage_widths):
            out_ch, stride = max(widths.values()), 1 if s == 0 else 2
            blocks = []
            for j in range(BASE_DEPTH[s] + max_extra):
                blocks.append(BottleneckBlock(in_ch, out_ch, expand_ratios, stride if j == 0 else 1))
                in_ch = out_ch
            stages.append(ElasticStage(blocks))
            reduction *= stride
            self.feature_info.append(dict(num_chs=out_ch, reduction=reduction, module=f"stages.{s}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_ch
        self.head = ClassifierHead(in_ch, num_classes, drop_rate=drop_rate)
        offsets = [sum(self.space.stage_blocks[:s]) for s in range(4)]
        self._routing = [(stage, [(block, offsets[s] + j) for j, block in enumerate(stage.blocks)])
                         for s, stage in enumerate(stages)]
        self._stem_layers = (self.stem.conv1, self.stem.conv2, self.stem.conv2.blocks[0], self.stem.conv3)
        ofa_init_(self)
        self.activate(self.space.max())

    def _configure(self, cfg: SubNetConfig) -> None:
        c1, skippable, c2, c3 = self._stem_layers
        mid, in_ch = self._stem_mid[cfg["stem_mid_width"]], self._stem_widths[cfg["stem_width"]]
        c1.configure(self.in_chans, mid)
        skippable.configure(cfg["stem_depth"])
        c2.configure(mid, mid)
        c3.configure(mid, in_ch)
        depth, width, expand = cfg["depth"], cfg["width"], cfg["expand"]
        for s, (stage, slots) in enumerate(self._routing):
            d = BASE_DEPTH[s] + depth[s]
            out_ch = self._stage_widths[s][width[s]]
            stage.configure(d)
            for block, i in slots[:d]:
                block.configure(in_ch, out_ch, expand[i])
                in_ch = out_ch
        if isinstance(self.head.classifier, ElasticLinear):  # not with num_classes=0 (e.g. features_only)
            self.head.classifier.configure(in_ch)


def _create(variant: str, pretrained: bool = False, **kwargs) -> OFAResNet:
    # checkpoint_filter_fn maps OFA's published state dict (the ofa_in1k tag) onto the SuperNet (ws_core.ofa)
    kwargs = ofa_model_kwargs(variant, kwargs)
    # features_only=True: timm's FeatureGetterNet over forward_intermediates; default: the stem and all 4 stages
    return build_model_with_cfg(OFAResNet, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=(0, 1, 2, 3, 4), feature_cls="getter"), **kwargs)


default_cfgs = generate_default_cfgs({
    "ws_ofa_resnet50": imagenet_cfg("stem.conv1.conv"),
    # OFA's trained SuperNet: on Google Drive, which timm cannot download; load a local copy with file=
    f"ws_ofa_resnet50.{OFA_TAG}": ofa_pretrained_cfg("ws_ofa_resnet50", first_conv="stem.conv1.conv",
                                                     classifier="head.classifier"),
    "ws_ofa_resnet50_32": cifar_cfg("stem.conv1.conv"),
    "ws_ofa_resnet50_025_32": cifar_cfg("stem.conv1.conv"),
})


@register_model
def ws_ofa_resnet50(pretrained: bool = False, **kwargs) -> OFAResNet:
    """OFA ResNet-50 SuperNet, 224×224, elastic resolution 128–224."""
    return _create("ws_ofa_resnet50", pretrained, **kwargs)


@register_model
def ws_ofa_resnet50_32(pretrained: bool = False, **kwargs) -> OFAResNet:
    """OFA ResNet-50 SuperNet for 32×32 inputs (CIFAR stem)."""
    return _create("ws_ofa_resnet50_32", pretrained, **dict(dict(cifar_stem=True, resolutions=(32,)), **kwargs))


@register_model
def ws_ofa_resnet50_025_32(pretrained: bool = False, **kwargs) -> OFAResNet:
    """OFA ResNet-50 space at a quarter of the widths for 32×32 inputs: fast on CPU."""
    args = dict(base_width=0.25, cifar_stem=True, resolutions=(32,))
    return _create("ws_ofa_resnet50_025_32", pretrained, **dict(args, **kwargs))

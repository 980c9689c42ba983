"""OFA ProxylessNAS SuperNet (Cai et al., "Once-for-All", ICLR 2020; ``ofa_proxyless.py``).

ProxylessNAS widths (32, 16, 24, 40, 80, 96, 192, 320, 1280) times a width multiplier, ReLU6 everywhere,
no SE, BN eps 1e-3: a fixed stem (3×3 conv, stride 2) and a fixed first block (depthwise-separable, expand
1), then 5 elastic stages of up to 4 MBConv blocks — depth {2,3,4}, expand ratio {3,4,6}, kernel {3,5,7}
per block — and a last stage of a single MBConv block whose depth is fixed (OFA's sampler sets its ``d``
to 1) but whose expand ratio and kernel are elastic; a 1×1 feature-mix conv, global pooling, classifier.
Elastic resolution 128–224 (step 4).

Registered in timm: ``timm.create_model("ws_ofa_proxyless_130")``; OFA's trained
``ofa_proxyless_d234_e346_k357_w1.3`` loads with the ``.ofa_in1k`` tag (``ws_core.ofa``).
"""

from __future__ import annotations

from collections.abc import Sequence

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from ..elastic import make_divisible
from ..ofa import OFA_TAG, checkpoint_filter_fn, ofa_model_kwargs, ofa_pretrained_cfg
from ..supernet import ClassifierHead
from ._common import imagenet_cfg, ofa_init_
from .mobilenetv3 import ConvBnAct, DepthwiseSeparable, MBConvSuperNet

__all__ = ["OFAProxylessNASNet"]

# OFA constants (ofa_proxyless.py): stem, first block, 5 elastic stages, the single-block last stage, feature mix
BASE_STAGE_WIDTH = (32, 16, 24, 40, 80, 96, 192, 320, 1280)
STRIDES = (2, 2, 2, 1, 2, 1)
BN_EPS = 1e-3  # OFAProxylessNASNets' bn_param (0.1, 1e-3)


class OFAProxylessNASNet(MBConvSuperNet):
    """The OFA ProxylessNAS SuperNet (OFA's ``OFAProxylessNASNets``).

    Args:
        num_classes: classifier outputs.
        in_chans: input channels.
        width_mult: width multiplier (1.3 = OFA's published ``ofa_proxyless_d234_e346_k357_w1.3``).
        depths, expand_ratios, kernel_sizes: the elastic choices (OFA: {2,3,4}, {3,4,6}, {3,5,7}); the last
            stage always runs its one block.
        resolutions: allowed input sizes (the resolution dimension).
        kernel_transform: OFA's learned kernel-transform matrices instead of a plain centre crop.
        drop_rate: dropout before the classifier.

    Example::

        >>> import timm, ws_core
        >>> net = timm.create_model("ws_ofa_proxyless_130")
        >>> net.space.size() == (9**2 + 9**3 + 9**4) ** 5 * 9 * 25
        True
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.3,
        depths: Sequence[int] = (2, 3, 4),
        expand_ratios: Sequence[float] = (3, 4, 6),
        kernel_sizes: Sequence[int] = (3, 5, 7),
        resolutions: Sequence[int] = tuple(range(128, 225, 4)),
        kernel_transform: bool = False,
        drop_rate: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        # the last stage: one block, its depth fixed (base_depth == stage_blocks)
        self.space = self.mbconv_space(resolutions, depths, expand_ratios, kernel_sizes,
                                       stage_blocks=(max(depths),) * 5 + (1,), base_depth=(0,) * 5 + (1,))
        widths = [make_divisible(w * width_mult, 8) for w in BASE_STAGE_WIDTH]
        last_channel = widths[-1]

        self.stem = nn.Sequential()
        self.stem.add_module("conv", ConvBnAct(in_chans, widths[0], 3, 2, "relu6", bn_eps=BN_EPS))
        self.stem.add_module("block", DepthwiseSeparable(widths[0], widths[1], 1, "relu6", bn_eps=BN_EPS))
        self.feature_info = [dict(num_chs=widths[1], reduction=2, module="stem")]
        n = len(STRIDES)
        in_ch = self._build_stages(widths[1], widths[2:-1], STRIDES, self.space.stage_blocks, ("relu6",) * n,
                                   (False,) * n, expand_ratios, kernel_sizes, kernel_transform, BN_EPS, 2)
        self.num_features = last_channel
        self.head = ClassifierHead(
            in_ch, num_classes, features=ConvBnAct(in_ch, last_channel, 1, act="relu6", bn_eps=BN_EPS),
            num_features=last_channel, drop_rate=drop_rate,
        )
        ofa_init_(self)
        self.activate(self.space.max())


def _create(variant: str, pretrained: bool = False, **kwargs) -> OFAProxylessNASNet:
    kwargs = ofa_model_kwargs(variant, kwargs)
    return build_model_with_cfg(OFAProxylessNASNet, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=(0, 1, 2, 3, 4, 5, 6), feature_cls="getter"),
                                **kwargs)


default_cfgs = generate_default_cfgs({
    f"ws_ofa_proxyless_130.{OFA_TAG}": ofa_pretrained_cfg("ws_ofa_proxyless_130", first_conv="stem.conv.conv",
                                                          classifier="head.classifier"),
    "ws_ofa_proxyless_130.*": imagenet_cfg("stem.conv.conv"),
})


@register_model
def ws_ofa_proxyless_130(pretrained: bool = False, **kwargs) -> OFAProxylessNASNet:
    """OFA ProxylessNAS (width 1.3, OFA's ``ofa_proxyless_d234_e346_k357_w1.3``), 224×224, elastic resolution
    128–224."""
    return _create("ws_ofa_proxyless_130", pretrained, **dict(width_mult=1.3, **kwargs))

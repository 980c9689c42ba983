"""Shared pieces of the reference SuperNets: OFA's initialisation and timm pretrained configs."""

from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "cifar_cfg", "imagenet_cfg",
           "ofa_init_"]

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
# Fashion-MNIST's grey-level mean / std over its 60,000 training images (ws_core.data normalises with these)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)


def ofa_init_(net: nn.Module) -> None:
    """OFA's ``he_fout`` initialisation: Kaiming-normal (fan-out) convs, unit BN, N(0, 0.01) linears."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def imagenet_cfg(first_conv: str, **kwargs) -> dict:
    """timm ``pretrained_cfg`` of an ImageNet-1k SuperNet (no hosted weights: load files via ``file=``)."""
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bilinear", "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": first_conv, "classifier": "head.classifier",
        "license": "apache-2.0", **kwargs,
    }


def cifar_cfg(first_conv: str, **kwargs) -> dict:
    """timm ``pretrained_cfg`` of a 32×32 (CIFAR-10) SuperNet."""
    return imagenet_cfg(first_conv, num_classes=10, input_size=(3, 32, 32), pool_size=(4, 4), crop_pct=1.0,
                        mean=CIFAR_MEAN, std=CIFAR_STD, **kwargs)

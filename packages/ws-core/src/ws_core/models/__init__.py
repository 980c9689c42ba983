"""Reference SuperNets, registered in timm's registry under names starting with ``ws_``."""

from .mobilenetv3 import MBConvBlock, OFAMobileNetV3
from .proxyless import OFAProxylessNASNet
from .resnet import BottleneckBlock, OFAResNet
from .vit import ElasticVisionTransformer  # noqa: F401  (registers the ws_vit_* SuperNets)

__all__ = ["BottleneckBlock", "MBConvBlock", "OFAMobileNetV3", "OFAProxylessNASNet", "OFAResNet"]

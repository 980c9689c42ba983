"""ws-core: SuperNets, SubNets and the machinery every weightshare package builds on.

Example::

    >>> import timm, ws_core
    >>> net = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10)
    >>> cfg = net.space.sample()
    >>> net.activate(cfg)          # in place, no weight copies
    >>> sub = net.extract(cfg)     # a standalone plain-PyTorch SubNet
"""

from . import models  # noqa: F401  (registers the ws_* SuperNets in timm)
from ._version import __version__ as __version__
from .bn import BNStatistics, recalibrate_bn
from .checkpoint import load_checkpoint, save_checkpoint
from .config import SubNetConfig
from .cost import CostModel
from .search import pareto_front
from .space import Dimension, SearchSpace
from .supernet import SubNet, SuperNet

__all__ = [
    "BNStatistics",
    "CostModel",
    "Dimension",
    "SearchSpace",
    "SubNet",
    "SubNetConfig",
    "SuperNet",
    "load_checkpoint",
    "pareto_front",
    "recalibrate_bn",
    "save_checkpoint",
]

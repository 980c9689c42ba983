"""ws-core: SuperNets, SubNets and the machinery every weightshare package builds on."""

from . import elastic
from .config import SubNetConfig
from .space import Dimension, SearchSpace
from .supernet import SubNet, SuperNet
from . import models  # registers the ws_* SuperNets in timm  # noqa: I001

__all__ = ["Dimension", "SearchSpace", "SubNet", "SubNetConfig", "SuperNet", "elastic", "models"]
__version__ = "0.1.0"

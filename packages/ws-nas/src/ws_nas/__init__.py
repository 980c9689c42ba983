"""ws-nas: ∇QDARTS — differentiable search over operations *and* bit-widths in one DARTS cell SuperNet.

Every convolution of the search cells mixes quantized copies of one shared full-precision weight
over bit-widths, so one search returns the architecture, its weights' bit-widths and its
activations' bit-widths together, traded against an expected-BitOps cost (Behnam et al., TMLR 2025,
built on DARTS, PC-DARTS and EdMIPS).

Example::

    >>> import lightning as L
    >>> from ws_nas import ImageClassificationData, NablaQDARTS, RetrainModule, SearchModule
    >>> data = ImageClassificationData("digits", held_out_fraction=0.5)
    >>> search = NablaQDARTS(complexity_weight=1e-3, warmup_epochs=5)
    >>> L.Trainer(max_epochs=20, callbacks=[search]).fit(
    ...     SearchModule(in_chans=1, input_size=8, C=8, layers=3, bits=(2, 4)), data)   # doctest: +SKIP
    >>> search.genotype.save("genotype.json")                                          # doctest: +SKIP
"""

from ._version import __version__ as __version__
from .baselines import post_training_quantize
from .callback import NablaQDARTS
from .cost import CostReport, cost_report
from .data import ImageClassificationData
from .export import export_qonnx, to_brevitas
from .genotype import CellPrecision, Genotype, derive_genotype
from .module import RetrainModule, SearchModule
from .network import DARTSNetwork
from .operations import PRIMITIVES
from .quant import MixedQuantConv2d, QuantConv2d, quantize_activation, quantize_weight
from .supernet import CellSuperNet

__all__ = [
    "PRIMITIVES",
    "CellPrecision",
    "CellSuperNet",
    "CostReport",
    "DARTSNetwork",
    "Genotype",
    "ImageClassificationData",
    "MixedQuantConv2d",
    "NablaQDARTS",
    "QuantConv2d",
    "RetrainModule",
    "SearchModule",
    "cost_report",
    "derive_genotype",
    "export_qonnx",
    "post_training_quantize",
    "quantize_activation",
    "quantize_weight",
    "to_brevitas",
]

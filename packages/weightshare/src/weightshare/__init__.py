"""weightshare: train one SuperNet, pick SubNets, serve them — the packages wired into one pipeline.

>>> from weightshare import PipelineConfig, run_pipeline
>>> result = run_pipeline(PipelineConfig(epochs=2))       # doctest: +SKIP
>>> result.report                                         # doctest: +SKIP
PosixPath('runs/20261204-093000/report.md')

Each step is a package's public API (ws-train, ws-core's search, ws-serve's deployment and calibration);
``examples/train_search_serve.py`` writes the steps out one by one.
"""

from ._version import __version__ as __version__
from .pipeline import PipelineConfig, PipelineResult, ServingRun, SubNetResult, TrainResult, run_pipeline

__all__ = ["PipelineConfig", "PipelineResult", "ServingRun", "SubNetResult", "TrainResult", "run_pipeline"]

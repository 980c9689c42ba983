"""weightshare: train one SuperNet, pick SubNets, serve them — the packages wired into one pipeline.

>>> from weightshare import PipelineConfig, run_pipeline
>>> result = run_pipeline(PipelineConfig(epochs=8))      # doctest: +SKIP
>>> result.report                                         # doctest: +SKIP
PosixPath('runs/20261122-093000/report.md')
"""

from .pipeline import (
    PipelineConfig,
    PipelineResult,
    ServingRun,
    SubNetResult,
    TrainResult,
    choose_load,
    deploy_served_set,
    evaluate_subnets,
    make_datamodule,
    measure_capacity,
    measure_overhead,
    run_pipeline,
    select_served,
    serve_and_replay,
    train_supernet,
    ws_serve_process,
)
from .report import write_report

__all__ = [
    "PipelineConfig",
    "PipelineResult",
    "ServingRun",
    "SubNetResult",
    "TrainResult",
    "choose_load",
    "deploy_served_set",
    "evaluate_subnets",
    "make_datamodule",
    "measure_capacity",
    "measure_overhead",
    "run_pipeline",
    "select_served",
    "serve_and_replay",
    "train_supernet",
    "write_report",
    "ws_serve_process",
]
__version__ = "0.1.0"

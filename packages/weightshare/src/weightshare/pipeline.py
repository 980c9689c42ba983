"""The main job, end to end: train one SuperNet once, pick a Pareto set of SubNets, serve them under bursty load.

Each step is one call into a package; this module only wires them together and reports:

1. **Train** — ws-train: :class:`~ws_train.SuperNetModule` with the Delayed ε-Shrinking callback on a
   Lightning ``Trainer``, on Fashion-MNIST (:class:`~ws_train.FashionMNISTDataModule`, offline through
   ``make data``), the bundled digits or CIFAR-10; the SuperNet is written as a ws-core checkpoint.
2. **Search** — ws-core: :func:`ws_core.search.pareto_search` over the SuperNet's space (min, max, random
   SubNets, then mutations of the Pareto front found so far), each SubNet scored on the *validation*
   split after BN recalibration (:func:`ws_core.bn.recalibrate_bn`) and measured once on the held-out
   split. Then an accuracy predictor (:class:`ws_core.search.AccuracyPredictor`) is fitted on those
   SubNets' validation accuracies and proposes a few more (:func:`ws_core.search.predictor_search`), which
   are measured the same way and join the list; the predictor's RMSE and Spearman correlation on them —
   SubNets it did not train on — are reported. The served set is an even spread of the validation Pareto
   front.
3. **Deploy** — ws-serve: :func:`ws_serve.deploy.save_served_set` writes the served set and its
   SubnetNorm statistics next to the checkpoint; :func:`ws_serve.deploy.deploy` measures the latency
   profile with the backend that will serve (cached for the server).
4. **Serve** — ws-serve: a calibration server measures the per-request overhead and the fixed
   SubNet's capacity (:mod:`ws_serve.calibration`; the capacity also gives the server time per query
   outside the forward pass, which SlackFit charges to a backlog), then SlackFit and two fixed SubNets
   (the most and the least accurate served) replay the same bursty traces, over ``repeats`` trace seeds.
5. **Report** — :func:`weightshare.report.write_report`: Markdown, PNG plots and ``results.json``.

:func:`run_pipeline` runs all five into ``runs/<timestamp>/``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["PipelineConfig", "PipelineResult", "ServingRun", "SubNetResult", "TrainResult", "run_pipeline"]

DATASETS = ("fashion_mnist", "digits", "cifar10")
BACKENDS = ("auto", "onnxruntime", "eager", "compile")
#: the share of the training steps over which DεS's ε ramp brings the SubNets in, right after the
#: full-model warm-up (``warmup_fraction``); the switch T_w, where they reach full weight, follows it
EPSILON_RAMP_FRACTION = 0.1
#: the accuracy predictor fitted on the ~26 measured SubNets: a small MLP (2 hidden layers of 32 on the
#: one-hot encoding; OFA's 3 × 400 is for thousands of SubNets) trained full-batch with Adam for 200 epochs,
#: well under a second on a CPU
PREDICTOR_SETTINGS = {"hidden_size": 32, "n_layers": 2, "epochs": 200, "lr": 1e-2}


# Configuration ---------------------------------------------------------------------------------------
@dataclass
class PipelineConfig:
    """Everything the pipeline does, validated up front (:meth:`validate`).

    Training: ``model`` (a registered ws-core SuperNet, ``timm.list_models("ws_*")``) on ``dataset``
    (``fashion_mnist``: 60,000 training / 10,000 held-out 28×28 images under ``data_root``, prepared
    offline by ``make data``, with torchvision's download tried first when ``download``; ``digits``:
    scikit-learn's digits, bundled; ``cifar10``: torchvision's files, downloaded only with ``download``)
    on ``train_size`` training images for ``epochs`` with Delayed ε-Shrinking (the full model alone for
    ``warmup_fraction`` of the steps, then max + min + ``num_random`` random SubNets per step, their
    gradient weight ramped up over the next :data:`EPSILON_RAMP_FRACTION` of the steps).
    Search: ``candidates`` SubNets besides the min and max, each after BN recalibration on
    ``bn_batches`` training batches, scored on the validation split; then ``predictor_candidates`` more
    proposed by an accuracy predictor fitted on those validation accuracies (0: none), measured the same
    way; ``served_subnets`` of the validation Pareto front are served.
    Serving (``backend``: ws-serve's execution backend; ``transport``: how the load generator sends
    requests, ``grpc`` — the Open Inference Protocol over gRPC, the cheaper client — or ``http``):
    ``repeats`` bursty traces (steady stream +
    Gamma stream of squared coefficient of variation ``cv2``, seeds ``seed``, ``seed + 1``, ...) of
    ``trace_seconds`` each, whose mean rate is ``load`` × the throughput of the fixed baseline SubNet
    (``baseline``: ``max`` — the most accurate served SubNet, ``median``, ``min``, or a SubNet id)
    measured end to end; ``slo_ms`` defaults to 4 × that SubNet's batch-1 latency including the
    measured per-request overhead.
    """

    model: str = "ws_ofa_mbv3_035_28"
    dataset: str = "fashion_mnist"
    data_root: str = "data"
    download: bool = True
    epochs: int = 2
    batch_size: int = 128
    lr: float = 0.1
    train_size: int | None = 30000
    warmup_fraction: float = 0.3
    num_random: int = 2
    augment: bool = False
    candidates: int = 24
    predictor_candidates: int = 4
    bn_batches: int = 4
    served_subnets: int = 6
    max_batch: int = 8
    workers: int = 1
    backend: str = "auto"
    transport: str = "grpc"
    trace_seconds: float = 20.0
    repeats: int = 2
    cv2: float = 8.0
    load: float = 0.7
    slo_ms: float | None = None
    baseline: str = "max"
    seed: int = 0
    out_dir: str = "runs"
    run_name: str | None = None
    progress_bar: bool = True

    def validate(self) -> PipelineConfig:
        """Raise ``ValueError`` naming the field, what is allowed and what was given."""
        import timm

        import ws_core  # noqa: F401  (registers the SuperNets with timm)
        from ws_serve.calibration import BASELINES
        from ws_serve.loadgen import TRANSPORTS

        registered = timm.list_models("ws_*")
        if self.model not in registered:
            raise ValueError(f"model must be one of {registered}, got {self.model!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {list(DATASETS)}, got {self.dataset!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {list(TRANSPORTS)}, got {self.transport!r}")
        for name, low in (("epochs", 1), ("batch_size", 2), ("candidates", 0), ("predictor_candidates", 0),
                          ("bn_batches", 1),
                          ("served_subnets", 1), ("max_batch", 1), ("workers", 1), ("repeats", 1),
                          ("num_random", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if self.train_size is not None and (isinstance(self.train_size, bool) or not isinstance(self.train_size, int)
                                            or self.train_size < self.batch_size):
            raise ValueError(f"train_size must be None or an int >= batch_size ({self.batch_size}), "
                             f"got {self.train_size!r}")
        for name in ("lr", "trace_seconds", "load"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        warmup_max = 1 - EPSILON_RAMP_FRACTION
        if not (isinstance(self.warmup_fraction, (int, float)) and 0 <= self.warmup_fraction < warmup_max):
            raise ValueError(f"warmup_fraction must be in [0, {warmup_max:g}) (the ε ramp takes "
                             f"{EPSILON_RAMP_FRACTION:g} of the steps after it), got {self.warmup_fraction!r}")
        if not (isinstance(self.cv2, (int, float)) and math.isfinite(self.cv2) and self.cv2 >= 0):
            raise ValueError(f"cv2 must be a finite number >= 0, got {self.cv2!r}")
        if self.slo_ms is not None and not (math.isfinite(self.slo_ms) and self.slo_ms > 0):
            raise ValueError(f"slo_ms must be None (derived from the profile) or a finite number > 0, "
                             f"got {self.slo_ms!r}")
        if self.baseline not in BASELINES and not re.fullmatch(r"[0-9a-f]{12}", self.baseline):
            raise ValueError(f"baseline must be one of {list(BASELINES)} or a 12-hex-digit SubNet id, "
                             f"got {self.baseline!r}")
        if self.run_name is not None and not re.fullmatch(r"[\w.-]+", self.run_name):
            raise ValueError(f"run_name may contain letters, digits, '_', '-' and '.', got {self.run_name!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Results -----------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    checkpoint: Path
    seconds: float
    steps: int
    metrics: dict[str, float]


@dataclass
class SubNetResult:
    """One evaluated SubNet after BN recalibration: validation accuracy (what the search ranks by),
    held-out accuracy (what is reported), MACs and parameters per sample; for a SubNet the accuracy
    predictor proposed, also the validation accuracy it predicted."""

    config: Any  # ws_core.SubNetConfig
    accuracy: float  # held-out split
    macs: int
    params: int
    label: str = ""  # how it was chosen: "min", "max", "random", "mutation" or "predicted"
    pareto: bool = False  # on the validation Pareto front
    served: bool = False
    val_accuracy: float = float("nan")
    statistics: Any = field(default=None, repr=False)  # ws_core.bn.BNStatistics
    predicted_val_accuracy: float = float("nan")  # the accuracy predictor's, for label "predicted"

    @property
    def id(self) -> str:
        return self.config.id

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "accuracy": self.accuracy, "val_accuracy": self.val_accuracy,
                "macs": self.macs, "params": self.params, "pareto": self.pareto, "served": self.served,
                "predicted_val_accuracy": self.predicted_val_accuracy, "config": self.config.to_dict()}


@dataclass
class ServingRun:
    """One policy's replays: the policy, a label, one client report per trace seed and the server logs."""

    policy: str
    label: str
    reports: list[Any]  # ws_serve.ReplayReport, one per repeat
    logs: list[Path]

    @property
    def report(self) -> Any:
        """The first repeat's report (the one the timeline plot shows)."""
        return self.reports[0]

    @property
    def slo_attainment(self) -> float:
        return sum(r.slo_attainment for r in self.reports) / len(self.reports)

    @property
    def mean_accuracy(self) -> float:
        """Mean over repeats of each repeat's mean served accuracy (repeats where no query met the SLO skipped)."""
        values = [r.mean_accuracy for r in self.reports if r.met_slo]
        return sum(values) / len(values) if values else float("nan")


@dataclass
class PipelineResult:
    run_dir: Path
    config: PipelineConfig
    train: TrainResult
    subnets: list[SubNetResult]
    profile: Any  # ws_serve.Profile
    slo_ms: float
    rate_qps: float
    traces: list[Any]  # ws_serve.Trace, one per repeat
    serving: list[ServingRun]
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step: train, search, profile, serve, total
    overhead_ms: float = 0.0  # measured per-request latency outside the forward pass (idle server)
    capacity_qps: float | None = None  # steady rate the fixed baseline sustains within the SLO, end to end
    query_cost_ms: float = 0.0  # server time per query outside the forward pass, estimated from the capacity
    report: Path | None = None

    @property
    def served(self) -> list[SubNetResult]:
        return [s for s in self.subnets if s.served]

    @property
    def trace(self) -> Any:
        return self.traces[0]


# Output ------------------------------------------------------------------------------------------------------
def _say(message: str) -> None:
    print(f"[weightshare] {message}", flush=True)


@contextmanager
def _quiet_third_parties() -> Iterator[None]:
    """Keep the main job's output to its own lines: Lightning's info banners and tips, and the
    deprecation warnings of third-party internals, are not for the person running the demo."""
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for pattern in (r".*isinstance\(treespec, LeafSpec\).*", r".*does not have many workers.*",
                        r".*You defined a `validation_step` but have no `val_dataloader`.*"):
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            lightning_log.setLevel(level)


def _progress_callback(say: Callable[[str], None], every_s: float = 20.0):
    """A Lightning callback that prints a line of training progress every ``every_s`` seconds — for logs
    and pipes, where a progress bar does not show."""
    import lightning as L

    class PlainProgress(L.Callback):
        def __init__(self) -> None:
            self.start = self.last = 0.0

        def on_train_start(self, trainer, pl_module) -> None:
            self.start = self.last = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            now = time.perf_counter()
            if now - self.last < every_s:
                return
            self.last = now
            loss = trainer.callback_metrics.get("train/loss")
            say(f"    epoch {trainer.current_epoch + 1}/{trainer.max_epochs}, step {trainer.global_step}/"
                f"{trainer.estimated_stepping_batches}"
                + (f", loss {float(loss):.3f}" if loss is not None else "") + f", {now - self.start:.0f} s")

        def on_validation_end(self, trainer, pl_module) -> None:
            acc = trainer.callback_metrics.get("val/acc")
            if acc is not None and not trainer.sanity_checking:
                say(f"    epoch {trainer.current_epoch + 1}: max SubNet validation accuracy {100 * float(acc):.2f}% "
                    f"(BN recalibrated)")

    return PlainProgress()


# 1. Training -----------------------------------------------------------------------------------------
def make_datamodule(cfg: PipelineConfig, image_size: int):
    """The data module of ``cfg.dataset`` (ws-train), at the SuperNet's input resolution."""
    from ws_train import CIFAR10DataModule, DigitsDataModule, FashionMNISTDataModule

    if cfg.dataset == "fashion_mnist":
        return FashionMNISTDataModule(root=cfg.data_root, download=cfg.download, image_size=image_size,
                                      train_size=cfg.train_size, augment=cfg.augment, batch_size=cfg.batch_size,
                                      calibration_batch_size=256, eval_batch_size=500, seed=cfg.seed)
    if cfg.dataset == "digits":
        return DigitsDataModule(image_size=image_size, train_size=cfg.train_size, batch_size=cfg.batch_size,
                                seed=cfg.seed)
    root = Path(cfg.data_root)
    if not cfg.download and not (root / "cifar-10-batches-py").is_dir():
        raise FileNotFoundError(f"CIFAR-10 is not under {root}/cifar-10-batches-py and downloading is off "
                                f"(--no-download); pass --data-root DIR pointing at torchvision's CIFAR-10 files, "
                                f"or allow the download")
    return CIFAR10DataModule(root=str(root), download=cfg.download, val_size=5000, batch_size=cfg.batch_size,
                             num_workers=0, seed=cfg.seed)


def train_supernet(cfg: PipelineConfig, datamodule, run_dir: Path,
                   say: Callable[[str], None] = _say) -> tuple[nn.Module, TrainResult]:
    """Train ``cfg.model`` once with Delayed ε-Shrinking; write ``run_dir/supernet.safetensors``."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from ws_train import DelayedEpsilonShrinking, SuperNetModule

    L.seed_everything(cfg.seed, verbose=False)
    module = SuperNetModule(cfg.model, num_classes=datamodule.num_classes, lr=cfg.lr, seed=cfg.seed,
                            val_bn_batches=cfg.bn_batches, channels_last=True)
    bar = cfg.progress_bar and sys.stdout.isatty()
    with _quiet_third_parties():
        trainer = L.Trainer(
            max_epochs=cfg.epochs,
            # DεS's switch T_w comes after the full-model warm-up and the ε ramp that ends at it
            callbacks=[DelayedEpsilonShrinking(warmup_fraction=cfg.warmup_fraction + EPSILON_RAMP_FRACTION,
                                               ramp_fraction=EPSILON_RAMP_FRACTION, num_random=cfg.num_random,
                                               seed=cfg.seed)]
                      + ([] if bar else [_progress_callback(say)]),
            logger=CSVLogger(run_dir, name="lightning", version=""),
            default_root_dir=run_dir,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=bar,
            num_sanity_val_steps=0,
            log_every_n_steps=10,
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule)
    seconds = time.perf_counter() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
    net = module.supernet.eval().to(memory_format=torch.contiguous_format)
    checkpoint = Path(module.save_supernet(str(run_dir / "supernet.safetensors"),
                                           extra={"trained_by": "weightshare pipeline (Delayed ε-Shrinking)",
                                                  "dataset": cfg.dataset, "epochs": cfg.epochs}))
    return net, TrainResult(checkpoint, seconds, int(trainer.global_step), metrics)


# 2. Search -------------------------------------------------------------------------------------------------
@torch.no_grad()
def top1_accuracy(net, loader, device: torch.device, num_classes: int) -> float:
    """Top-1 accuracy of ``net`` (its active SubNet) over the ``(inputs, targets, ...)`` batches of ``loader``."""
    from torchmetrics.classification import MulticlassAccuracy

    metric = MulticlassAccuracy(num_classes=num_classes, average="micro").to(device)
    for x, y, *_ in loader:
        metric.update(net(x.to(device)).argmax(1), y.to(device))
    return float(metric.compute())


def fit_predictor(space, configs, accuracies, seed: int = 0):
    """A :class:`ws_core.search.AccuracyPredictor` fitted on ``(configs, accuracies)`` with
    :data:`PREDICTOR_SETTINGS` (seeded: initialisation and shuffling)."""
    from ws_core.search import AccuracyPredictor

    settings = dict(PREDICTOR_SETTINGS)
    with torch.random.fork_rng(), torch.enable_grad():
        torch.manual_seed(seed)
        predictor = AccuracyPredictor(space, hidden_size=settings.pop("hidden_size"),
                                      n_layers=settings.pop("n_layers"))
        predictor.fit(configs, accuracies, batch_size=len(configs), generator=torch.Generator().manual_seed(seed),
                      **settings)
    return predictor.eval()


def evaluate_subnets(net, datamodule, candidates: int = 30, bn_batches: int = 4, seed: int = 0,
                     progress: Callable[[str], None] | None = None,
                     predictor_candidates: int = 0) -> list[SubNetResult]:
    """Score the min, the max and ``candidates`` more SubNets (:func:`ws_core.search.pareto_search`) on the
    validation split after BN recalibration on ``bn_batches`` training batches; measure each on the
    held-out split too (the data module's test split, else its validation split). Then fit an accuracy
    predictor on their validation accuracies (:func:`fit_predictor`) and score up to
    ``predictor_candidates`` SubNets it proposes (:func:`ws_core.search.predictor_search`: the predicted
    best under MACs budgets spread from the min's to the max's) the same way, label ``"predicted"``, with
    the predicted validation accuracy kept. Mark the validation Pareto front of all of them. Each SubNet's
    recalibrated statistics are kept (they become SubnetNorm statistics); the SuperNet's own are restored
    afterwards."""
    from ws_core.bn import kept_bn_buffers, recalibrate_bn
    from ws_core.cost import CostModel
    from ws_core.search import ParetoPoint, pareto_front, pareto_search, predictor_search

    device = next(net.parameters()).device
    costs = CostModel(net)
    # every SubNet reads the same images: hold the batches once, in large batches (per-layer overhead)
    batch_size = getattr(datamodule, "eval_batch_size", None)
    datamodule.eval_batch_size = max(batch_size or 0, 500)
    try:
        validation = list(datamodule.val_dataloader())
        held_out = list(datamodule.test_dataloader()) if getattr(datamodule, "test_set", None) is not None \
            else validation
    finally:
        datamodule.eval_batch_size = batch_size
    calibration = list(islice(datamodule.calibration_dataloader(), bn_batches))
    # channels_last halves the CPU time of these depthwise-heavy forwards (same values up to rounding)
    fmt = torch.channels_last

    def as_fmt(batches):
        return [(x.contiguous(memory_format=fmt), y, *rest) for x, y, *rest in batches]

    same = held_out is validation
    validation, calibration = as_fmt(validation), as_fmt(calibration)
    held_out = validation if same else as_fmt(held_out)
    net.to(memory_format=fmt)
    measured: dict[Any, tuple[float, Any]] = {}

    def score(cfg) -> float:
        stats = recalibrate_bn(net, calibration, cfg, num_batches=bn_batches)
        with net.subnet(cfg):
            val = top1_accuracy(net, validation, device, datamodule.num_classes)
            test = val if held_out is validation else top1_accuracy(net, held_out, device, datamodule.num_classes)
        measured[cfg] = (test, stats)
        return val

    predicted: dict[Any, float] = {}

    def report(point, index: int) -> None:
        if progress is not None:
            guess = f"  (predicted {100 * predicted[point.config]:.2f}%)" if point.config in predicted else ""
            progress(f"SubNet {index + 1}: {point.config.id} {point.label:>8}  {point.cost / 1e6:6.2f} MMACs  "
                     f"validation {100 * point.score:.2f}%  held-out {100 * measured[point.config][0]:.2f}%"
                     + guess)

    def macs(cfg) -> float:
        return float(costs.macs(cfg))

    net.eval()
    generator = torch.Generator().manual_seed(seed)
    try:
        with kept_bn_buffers(net):
            points = pareto_search(net.space, score, macs, candidates, generator=generator, on_scored=report)
            if predictor_candidates:
                configs = [p.config for p in points]
                predictor = fit_predictor(net.space, configs, [p.score for p in points], seed)
                for proposal in predictor_search(predictor, macs, predictor_candidates, exclude=configs,
                                                 generator=generator):
                    predicted[proposal.config] = proposal.score
                    points.append(ParetoPoint(proposal.config, proposal.label, score(proposal.config), proposal.cost))
                    report(points[-1], len(points) - 1)
    finally:
        net.to(memory_format=torch.contiguous_format)
    front = set(pareto_front([p.cost for p in points], [p.score for p in points]))
    return [SubNetResult(p.config, measured[p.config][0], int(p.cost), int(costs.params(p.config)), p.label,
                         i in front, val_accuracy=p.score, statistics=measured[p.config][1],
                         predicted_val_accuracy=predicted.get(p.config, float("nan")))
            for i, p in enumerate(points)]


def select_served(results: list[SubNetResult], n: int) -> list[SubNetResult]:
    """Up to ``n`` SubNets of the Pareto front, evenly spread over its MACs range (both ends included);
    marks them ``served``."""
    front = sorted((r for r in results if r.pareto), key=lambda r: r.macs)
    if not front:
        raise ValueError("select_served: no SubNet is on the Pareto front (nothing evaluated?)")
    if n >= len(front):
        chosen = front
    else:
        idx = sorted({round(k * (len(front) - 1) / max(n - 1, 1)) for k in range(n)})
        chosen = [front[i] for i in idx]
    for r in chosen:
        r.served = True
    return chosen


# The whole pipeline ---------------------------------------------------------------------------------------------
def run_pipeline(cfg: PipelineConfig | None = None, say: Callable[[str], None] = _say) -> PipelineResult:
    """Train → search → serve → report into ``<out_dir>/<run_name or UTC timestamp>/``; returns the results."""
    import timm

    from ws_serve.backends import server_backend_options
    from ws_serve.calibration import (
        choose_load,
        estimate_query_cost,
        measure_capacity,
        measure_overhead,
        serve_and_replay,
        served_rate_ratio,
        ws_serve_process,
    )
    from ws_serve.deploy import deploy, save_served_set
    from ws_serve.traces import bursty_trace

    from .report import write_report

    cfg = (cfg or PipelineConfig()).validate()
    name = cfg.run_name or datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg.out_dir) / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"{run_dir} exists and is not empty; choose another run name or out dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    image_size = int(timm.get_pretrained_cfg(cfg.model).input_size[-1])
    datamodule = make_datamodule(cfg, image_size)
    say(f"1/4 training {cfg.model} on {cfg.dataset} ({image_size}×{image_size}) for {cfg.epochs} epochs "
        f"with Delayed ε-Shrinking")
    net, train = train_supernet(cfg, datamodule, run_dir, say)
    seconds["train"] = train.seconds
    say(f"    trained in {train.seconds:.0f} s ({train.steps} steps); checkpoint {train.checkpoint}")

    t = time.perf_counter()
    say(f"2/4 evaluating the min, the max and {cfg.candidates} more SubNets (random, then mutations of the "
        f"Pareto front; BN recalibration, ranked on the validation split, measured on the held-out split)"
        + (f", then up to {cfg.predictor_candidates} proposed by an accuracy predictor fitted on them"
           if cfg.predictor_candidates else ""))
    subnets = evaluate_subnets(net, datamodule, cfg.candidates, cfg.bn_batches, cfg.seed, progress=say,
                               predictor_candidates=cfg.predictor_candidates)
    served = select_served(subnets, cfg.served_subnets)
    seconds["search"] = time.perf_counter() - t
    say(f"    Pareto front: {sum(s.pareto for s in subnets)} SubNets; serving {len(served)}: "
        + ", ".join(f"{s.id} ({100 * s.accuracy:.1f}%, {s.macs / 1e6:.2f} MMACs)" for s in served))

    t = time.perf_counter()
    say(f"3/4 profiling the served SubNets on this machine ({cfg.backend} backend), then the serving overhead")
    save_served_set(net, train.checkpoint, [s.config for s in served], [s.accuracy for s in served],
                    [s.statistics for s in served], source="held-out accuracy after BN recalibration")
    # the profile times the sessions the servers will run: ONNX Runtime's threads spinning only during a
    # forward (this process trains with OpenMP's active waiting) and at most the threads a server gives
    # them (one core stays with its request handling)
    options = server_backend_options(cfg.backend, cfg.workers, spinning="run")
    profile = deploy(None, train.checkpoint, net=net, max_batch=cfg.max_batch, backend=cfg.backend,
                     backend_options=options, progress=lambda line: say(f"    {line}")).profile
    baseline = choose_load(profile, cfg.baseline)[0]
    baseline_id = profile.subnet_ids[baseline]
    sample_shape = (3, image_size, image_size)
    server_args = ["--backend", cfg.backend, *(["--intra-op-spinning", "run"] if options else [])]
    with ws_serve_process(train.checkpoint, f"fixed:{baseline_id}", log=run_dir / "server-calibration.log",
                          max_batch=cfg.max_batch, workers=cfg.workers, extra_args=server_args,
                          transport=cfg.transport) as url:
        overhead_ms = measure_overhead(url, cfg.model, sample_shape, profile.latency(baseline, 1),
                                       transport=cfg.transport)
        _, slo_ms, estimate = choose_load(profile, baseline_id, 1.0, cfg.slo_ms, overhead_ms)
        capacity = measure_capacity(url, cfg.model, sample_shape, slo_ms, start_qps=estimate,
                                    transport=cfg.transport)
    _, slo_ms, rate = choose_load(profile, baseline_id, cfg.load, cfg.slo_ms, overhead_ms, capacity)
    query_cost_ms = estimate_query_cost(profile, baseline, capacity)
    traces = [bursty_trace(0.25 * rate, 0.75 * rate, cfg.cv2, cfg.trace_seconds, seed=cfg.seed + r)
              for r in range(cfg.repeats)]
    traces[0].save(run_dir / "trace.csv")
    seconds["profile"] = time.perf_counter() - t
    say(f"    overhead {overhead_ms:.1f} ms per request, fixed-SubNet throughput {capacity:.1f} q/s "
        f"({query_cost_ms:.2f} ms of server time per query outside the forward pass: the fastest served SubNet "
        f"drains a backlog {served_rate_ratio(profile, query_cost_ms):.2f}× as fast as the most accurate); "
        f"SLO {slo_ms:.1f} ms; {cfg.repeats} bursty trace(s) of {cfg.trace_seconds:g} s "
        f"(mean {rate:.1f} q/s, CV² {cfg.cv2:g}, {len(traces[0])} queries in the first)")

    t = time.perf_counter()
    most, least = profile.subnet_ids[-1], profile.subnet_ids[0]
    policies = [("slackfit", "SlackFit"), (f"fixed:{most}", f"fixed {most} (most accurate)")]
    if least != most:
        policies.append((f"fixed:{least}", f"fixed {least} (least accurate)"))
    runs = []
    for policy, label in policies:
        say(f"4/4 serving with {label}: ws-serve on 127.0.0.1, replaying {cfg.repeats} trace(s) over {cfg.transport}")
        reports, logs = [], []
        for r, trace in enumerate(traces):
            log = run_dir / f"server-{policy.replace(':', '-')}-{r}.log"
            reports.append(serve_and_replay(train.checkpoint, policy, trace, slo_ms, log=log, model=cfg.model,
                                            sample_shape=sample_shape, max_batch=cfg.max_batch,
                                            workers=cfg.workers, overhead_ms=overhead_ms,
                                            query_cost_ms=query_cost_ms, seed=cfg.seed + r,
                                            extra_args=server_args, transport=cfg.transport))
            logs.append(log)
        run = ServingRun(policy, label, reports, logs)
        runs.append(run)
        attain = [rep.slo_attainment for rep in reports]
        say(f"    SLO attainment {run.slo_attainment:.3f} (range {min(attain):.3f}–{max(attain):.3f}), "
            f"mean served accuracy {100 * run.mean_accuracy:.2f}%")
    seconds["serve"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start

    result = PipelineResult(run_dir, cfg, train, subnets, profile, slo_ms, rate, traces, runs, seconds, overhead_ms,
                            capacity, query_cost_ms)
    result.report = write_report(result)
    return result

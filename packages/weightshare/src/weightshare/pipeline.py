"""The main job, end to end: train one SuperNet once, pick a Pareto set of SubNets, serve them under bursty load.

Each step is a public function, so the pipeline can be re-composed (``examples/train_search_serve.py``):

1. :func:`train_supernet` — ws-train: :class:`~ws_train.SuperNetModule` with the Delayed ε-Shrinking
   callback on a Lightning ``Trainer``; the SuperNet is written as a ws-core checkpoint.
2. :func:`evaluate_subnets` — ws-core: for the min, the max, random SubNets and mutations of the
   Pareto front found so far, BN recalibration
   (:func:`ws_core.bn.recalibrate_bn`), held-out accuracy (torchmetrics) and MACs / parameters
   (:class:`ws_core.cost.CostModel`); :func:`select_served` keeps an even spread of the Pareto front
   (:func:`ws_core.search.pareto_front`).
3. :func:`deploy_served_set` — ws-serve: the served set with its measured accuracies and SubnetNorm
   statistics next to the checkpoint, and the latency profile measured on this machine.
4. :func:`serve_and_replay` — ws-serve: the real server process (``ws-serve run``) on loopback, one per
   policy, and an open-loop bursty trace replayed against it with the KServe v2 load generator. The
   trace's rate and the SLO follow from the measured profile and the measured per-request HTTP
   overhead (:func:`measure_overhead`, :func:`choose_load`).
5. :func:`weightshare.report.write_report` — a Markdown summary, PNG plots and ``results.json``.

:func:`run_pipeline` runs all five into ``runs/<timestamp>/``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "DATASETS",
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
    "ws_serve_process",
]

DATASETS = ("digits", "cifar10")
BASELINES = ("max", "median", "min")


# Configuration ---------------------------------------------------------------------------------------
@dataclass
class PipelineConfig:
    """Everything the pipeline does, validated up front (:meth:`validate`).

    Training: ``model`` (a registered ws-core SuperNet, ``timm.list_models("ws_*")``) on ``dataset``
    (``digits``: scikit-learn's digits, bundled and offline; ``cifar10``: torchvision files under
    ``data_root``, downloaded only with ``download``) for ``epochs`` with Delayed ε-Shrinking.
    Search: ``candidates`` SubNets besides the min and max (a third random, then mutations of the
    Pareto front found so far, :func:`evaluate_subnets`), each after BN recalibration on
    ``bn_batches`` training batches; ``served_subnets`` of the Pareto front are served.
    Serving: a bursty trace (steady stream + Gamma stream of squared coefficient of variation ``cv2``)
    of ``trace_seconds``, whose mean rate is ``load`` × the throughput of the fixed baseline SubNet
    (``baseline``: ``max`` — the most accurate served SubNet, ``median``, ``min``, or a SubNet id)
    measured end to end (:func:`measure_capacity`); ``slo_ms`` defaults to 4 × that SubNet's batch-1
    latency measured here, HTTP overhead included (:func:`choose_load`).
    """

    model: str = "ws_ofa_mbv3_035_32"
    dataset: str = "digits"
    data_root: str = "data"
    download: bool = False
    epochs: int = 4
    batch_size: int = 64
    lr: float = 0.1
    train_size: int | None = None
    candidates: int = 30
    bn_batches: int = 4
    served_subnets: int = 6
    max_batch: int = 8
    workers: int = 1
    trace_seconds: float = 30.0
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

        registered = timm.list_models("ws_*")
        if self.model not in registered:
            raise ValueError(f"model must be one of {registered}, got {self.model!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {list(DATASETS)}, got {self.dataset!r}")
        for name, low in (("epochs", 1), ("batch_size", 2), ("candidates", 0), ("bn_batches", 1),
                          ("served_subnets", 1), ("max_batch", 1), ("workers", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if self.train_size is not None and (not isinstance(self.train_size, int) or self.train_size < self.batch_size):
            raise ValueError(f"train_size must be None or an int >= batch_size ({self.batch_size}), "
                             f"got {self.train_size!r}")
        for name in ("lr", "trace_seconds", "load"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
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
    """One evaluated SubNet: held-out accuracy after BN recalibration, MACs and parameters per sample."""

    config: Any  # ws_core.SubNetConfig
    accuracy: float
    macs: int
    params: int
    label: str = ""  # how it was chosen: "min", "max", "random" or "mutation"
    pareto: bool = False
    served: bool = False
    statistics: Any = field(default=None, repr=False)  # ws_core.bn.BNStatistics

    @property
    def id(self) -> str:
        return self.config.id

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "accuracy": self.accuracy, "macs": self.macs,
                "params": self.params, "pareto": self.pareto, "served": self.served, "config": self.config.to_dict()}


@dataclass
class ServingRun:
    """One policy's replay: the policy name, the client's report and the server's log file."""

    policy: str
    label: str
    report: Any  # ws_serve.ReplayReport
    log: Path


@dataclass
class PipelineResult:
    run_dir: Path
    config: PipelineConfig
    train: TrainResult
    subnets: list[SubNetResult]
    profile: Any  # ws_serve.Profile
    slo_ms: float
    rate_qps: float
    trace: Any  # ws_serve.Trace
    serving: list[ServingRun]
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step: train, search, profile, serve, total
    overhead_ms: float = 0.0  # measured per-request latency outside the forward pass (idle server)
    capacity_qps: float | None = None  # steady rate the fixed baseline sustains within the SLO, end to end
    report: Path | None = None

    @property
    def served(self) -> list[SubNetResult]:
        return [s for s in self.subnets if s.served]


# 1. Training -----------------------------------------------------------------------------------------------
def make_datamodule(cfg: PipelineConfig, image_size: int):
    """The data module of ``cfg.dataset`` (ws-train), at the SuperNet's input resolution."""
    from ws_train import CIFAR10DataModule, DigitsDataModule

    if cfg.dataset == "digits":
        return DigitsDataModule(image_size=image_size, train_size=cfg.train_size, batch_size=cfg.batch_size,
                                seed=cfg.seed)
    root = Path(cfg.data_root)
    if not cfg.download and not (root / "cifar-10-batches-py").is_dir():
        raise FileNotFoundError(f"CIFAR-10 is not under {root}/cifar-10-batches-py; pass --data-root DIR pointing "
                                f"at torchvision's CIFAR-10 files, or --download to fetch them")
    return CIFAR10DataModule(root=str(root), download=cfg.download, val_size=5000, batch_size=cfg.batch_size,
                             num_workers=0, seed=cfg.seed)


def train_supernet(cfg: PipelineConfig, datamodule, run_dir: Path) -> tuple[nn.Module, TrainResult]:
    """Train ``cfg.model`` once with Delayed ε-Shrinking; write ``run_dir/supernet.safetensors``."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from ws_train import DelayedEpsilonShrinking, SubNetValidation, SuperNetModule

    L.seed_everything(cfg.seed, verbose=False)
    module = SuperNetModule(cfg.model, num_classes=datamodule.num_classes, lr=cfg.lr, seed=cfg.seed)
    trainer = L.Trainer(
        max_epochs=cfg.epochs,
        callbacks=[DelayedEpsilonShrinking(), SubNetValidation(("min", "max"), bn_batches=cfg.bn_batches,
                                                               seed=cfg.seed)],
        logger=CSVLogger(run_dir, name="lightning", version=""),
        default_root_dir=run_dir,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=cfg.progress_bar,
        log_every_n_steps=5,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule)
    seconds = time.perf_counter() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
    checkpoint = Path(module.save_supernet(str(run_dir / "supernet.safetensors"),
                                           extra={"trained_by": "weightshare pipeline (Delayed ε-Shrinking)",
                                                  "dataset": cfg.dataset, "epochs": cfg.epochs}))
    net = module.supernet.eval()
    return net, TrainResult(checkpoint, seconds, int(trainer.global_step), metrics)


# 2. Search -------------------------------------------------------------------------------------------------
@torch.no_grad()
def _accuracy(net, loader, device: torch.device, num_classes: int) -> float:
    from torchmetrics.classification import MulticlassAccuracy

    metric = MulticlassAccuracy(num_classes=num_classes, average="micro").to(device)
    for x, y, *_ in loader:
        metric.update(net(x.to(device)).argmax(1), y.to(device))
    return float(metric.compute())


def evaluate_subnets(
    net,
    datamodule,
    candidates: int = 30,
    bn_batches: int = 4,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    random_fraction: float = 1 / 3,
    mutation_prob: float = 0.2,
) -> list[SubNetResult]:
    """Evaluate the min, the max and ``candidates`` more SubNets; mark the (MACs, accuracy) Pareto front.

    The first ``random_fraction`` of the candidates are uniform samples of the search space; each
    later one mutates (``space.mutate`` with ``mutation_prob``, OFA's operator) a SubNet drawn from
    the Pareto front found so far — a small multi-objective evolutionary search that fills the front
    between the min and the max SubNet. Each SubNet's BN statistics are re-estimated on
    ``bn_batches`` training batches (:func:`ws_core.bn.recalibrate_bn`) before its held-out accuracy
    is measured, and kept (``SubNetResult.statistics``) — they become the served SubNets' SubnetNorm
    statistics. The SuperNet's own statistics are restored afterwards.
    """
    from ws_core.bn import recalibrate_bn
    from ws_core.cost import CostModel
    from ws_core.search import pareto_front

    if not 0.0 <= random_fraction <= 1.0:
        raise ValueError(f"random_fraction must be in [0, 1], got {random_fraction}")
    device = next(net.parameters()).device
    space, costs = net.space, CostModel(net)
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    calibration, held_out = datamodule.calibration_dataloader(), datamodule.val_dataloader()
    results: list[SubNetResult] = []
    seen: set[str] = set()

    def evaluate(cfg, label: str) -> None:
        seen.add(cfg.id)
        stats = recalibrate_bn(net, calibration, cfg, num_batches=bn_batches)
        with net.subnet(cfg):
            acc = _accuracy(net, held_out, device, datamodule.num_classes)
        results.append(SubNetResult(cfg, acc, int(costs.macs(cfg)), int(costs.params(cfg)), label, statistics=stats))
        if progress is not None:
            progress(f"SubNet {len(results)}: {cfg.id} {label:>8}  {costs.macs(cfg) / 1e6:7.2f} MMACs  "
                     f"held-out accuracy {100 * acc:.2f}%")

    def draw(i: int):
        for _ in range(100):
            if i < round(candidates * random_fraction):
                cfg, label = space.sample(generator), "random"
            else:
                front = pareto_front([r.macs for r in results], [r.accuracy for r in results])
                parent = results[front[int(torch.randint(len(front), (1,), generator=generator))]]
                cfg, label = space.mutate(parent.config, mutation_prob, generator), "mutation"
            if cfg.id not in seen:
                return cfg, label
        return None, ""  # a tiny space: every nearby SubNet is already evaluated

    net.eval()
    try:
        for cfg, label in ((space.min(), "min"), (space.max(), "max")):
            if cfg.id not in seen:
                evaluate(cfg, label)
        for i in range(candidates):
            cfg, label = draw(i)
            if cfg is not None:
                evaluate(cfg, label)
    finally:
        with torch.no_grad():
            for m, (mean, var) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
    for i in pareto_front([r.macs for r in results], [r.accuracy for r in results]):
        results[i].pareto = True
    return results


def select_served(results: Sequence[SubNetResult], n: int) -> list[SubNetResult]:
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


# 3. Deployment ------------------------------------------------------------------------------------------------
def deploy_served_set(checkpoint: Path, served: Sequence[SubNetResult], max_batch: int, net=None,
                      profile_repeats: int = 10):
    """Write the served set (measured accuracies) and SubnetNorm statistics next to ``checkpoint`` and
    measure the latency profile on this machine (cached next to it; the server reuses it)."""
    from ws_serve import ServedSet, deploy
    from ws_serve.deploy import served_set_path
    from ws_serve.subnetact import save_subnet_norm, subnet_norm_path

    if net is None:
        import timm

        from ws_core.checkpoint import load_checkpoint, read_checkpoint_metadata

        meta = read_checkpoint_metadata(checkpoint)
        net = timm.create_model(meta["architecture"], num_classes=meta["num_classes"])
        load_checkpoint(net, checkpoint)
    served_set = ServedSet.from_accuracies(net, [s.config for s in served], [s.accuracy for s in served],
                                           source="held-out accuracy after BN recalibration")
    served_set.save(served_set_path(checkpoint))
    save_subnet_norm(subnet_norm_path(checkpoint), [s.statistics for s in served])
    return deploy(None, checkpoint, max_batch=max_batch, profile_repeats=profile_repeats).profile


def choose_load(
    profile, baseline: str = "max", load: float = 0.7, slo_ms: float | None = None, overhead_ms: float = 0.0,
    capacity_qps: float | None = None,
) -> tuple[int, float, float]:
    """``(baseline SubNet index, SLO in ms, mean arrival rate in q/s)`` from a measured profile.

    ``overhead_ms`` is the per-request latency outside the forward pass (HTTP, serialisation) of an
    idle server (:func:`measure_overhead`). The SLO defaults to 4 × the baseline SubNet's batch-1
    latency including that overhead. The rate is ``load`` × the baseline's throughput: measured end
    to end if ``capacity_qps`` is given (:func:`measure_capacity`: the steady rate it sustains within
    the SLO), else estimated as the peak of
    ``b / (L(b) + b · overhead)`` over the batch sizes ``b`` whose latency fits in half the SLO — so
    the fixed baseline keeps up on average and misses the SLO only in bursts.
    """
    if overhead_ms < 0:
        raise ValueError(f"overhead_ms must be >= 0, got {overhead_ms}")
    n = profile.num_subnets
    if baseline == "max":
        index = n - 1
    elif baseline == "min":
        index = 0
    elif baseline == "median":
        index = n // 2
    else:
        index = profile.index(baseline)
    if slo_ms is None:
        slo_ms = 4 * (profile.latency(index, 1) + overhead_ms)
    fits = [b for b in range(1, profile.max_batch + 1)
            if profile.latency(index, b) + overhead_ms <= slo_ms / 2] or [1]
    peak = max(1000 * b / (profile.latency(index, b) + b * overhead_ms) for b in fits)
    if capacity_qps is not None:
        if not capacity_qps > 0:
            raise ValueError(f"capacity_qps must be > 0, got {capacity_qps}")
        peak = capacity_qps
    return index, float(slo_ms), float(load * peak)


# 4. Serving -------------------------------------------------------------------------------------------------------
@contextmanager
def ws_serve_process(checkpoint: Path, policy: str, *, log: Path, max_batch: int = 8, workers: int = 1,
                     overhead_ms: float = 1.0, start_timeout_s: float = 300.0) -> Iterator[str]:
    """Run ``ws-serve run`` for ``checkpoint`` with ``policy`` on a free loopback port until the block
    ends (then SIGTERM: the server answers what it accepted and exits); yields its base URL once ready
    (:func:`ws_serve.launch.server_process`)."""
    from ws_serve.launch import server_process

    args = ["--checkpoint", str(checkpoint), "--policy", policy, "--max-batch", str(max_batch), "--workers",
            str(workers), "--max-queue", "4096", "--overhead-ms", f"{overhead_ms:.3f}"]
    with server_process(args, log, start_timeout_s=start_timeout_s) as url:
        yield url


def measure_overhead(url: str, model: str, sample_shape: Sequence[int], forward_ms: float, requests: int = 24,
                     spacing_s: float = 0.1) -> float:
    """Per-request cost outside the forward pass, in ms: the median client-measured latency of
    ``requests`` requests sent one at a time (``spacing_s`` apart, the first quarter discarded as
    warm-up) minus ``forward_ms``, the batch-1 forward latency of the SubNet that serves them."""
    from ws_serve import replay_sync

    report = replay_sync(url, model, [spacing_s * i for i in range(requests)], slo_ms=60_000.0,
                         sample_shape=tuple(sample_shape))
    if report.ok < requests:
        raise RuntimeError(f"measure_overhead: only {report.ok} of {requests} sequential requests succeeded "
                           f"({dict(report.statuses)})")
    measured = sorted(r.latency_ms for r in report.records if r.at_s >= spacing_s * (requests // 4))
    return max(0.0, measured[len(measured) // 2] - forward_ms)


def measure_capacity(url: str, model: str, sample_shape: Sequence[int], slo_ms: float, start_qps: float, *,
                     probe_s: float = 3.0, target: float = 0.95, shrink: float = 0.8, max_probes: int = 8) -> float:
    """The highest steady arrival rate (q/s) a server sustains with ``target`` SLO attainment.

    Steady open-loop streams of ``probe_s`` seconds are replayed, starting at ``start_qps`` and
    lowering the rate by ``shrink`` until at least ``target`` of the requests meet ``slo_ms`` (at most
    ``max_probes`` probes; the last rate tried is returned). Measured end to end on this machine, so
    HTTP handling, batching and the client's own work are all included.
    """
    from ws_serve import replay_sync

    if not (start_qps > 0 and 0 < shrink < 1 and 0 < target <= 1 and probe_s > 0 and max_probes >= 1):
        raise ValueError(f"measure_capacity: need start_qps > 0, 0 < shrink < 1, 0 < target <= 1, probe_s > 0, "
                         f"max_probes >= 1; got {start_qps}, {shrink}, {target}, {probe_s}, {max_probes}")
    rate = start_qps
    for probe in range(max_probes):
        arrivals = [i / rate for i in range(max(1, int(rate * probe_s)))]
        report = replay_sync(url, model, arrivals, slo_ms=slo_ms, sample_shape=tuple(sample_shape))
        if report.slo_attainment >= target or probe == max_probes - 1:
            return rate
        rate *= shrink
        time.sleep(0.5)  # let the queue drain before the next probe
    return rate


def serve_and_replay(checkpoint: Path, policy: str, trace, slo_ms: float, *, log: Path, model: str,
                     sample_shape: Sequence[int], max_batch: int = 8, workers: int = 1, overhead_ms: float = 1.0,
                     seed: int = 0, warmup: int = 16):
    """Serve ``checkpoint`` with ``policy`` (:func:`ws_serve_process`), send ``warmup`` unmeasured
    requests, then replay ``trace`` open loop (one KServe v2 request per arrival, SLO ``slo_ms``);
    the client's :class:`ws_serve.ReplayReport`."""
    from ws_serve import replay_sync

    with ws_serve_process(checkpoint, policy, log=log, max_batch=max_batch, workers=workers,
                          overhead_ms=overhead_ms) as url:
        replay_sync(url, model, [0.02 * i for i in range(warmup)], slo_ms=slo_ms, sample_shape=tuple(sample_shape),
                    seed=seed)
        return replay_sync(url, model, trace, slo_ms=slo_ms, sample_shape=tuple(sample_shape), seed=seed)


# The whole pipeline ---------------------------------------------------------------------------------------------
def _say(message: str) -> None:
    print(f"[weightshare] {message}", flush=True)


def run_pipeline(cfg: PipelineConfig | None = None, say: Callable[[str], None] = _say) -> PipelineResult:
    """Train → search → serve → report into ``<out_dir>/<run_name or UTC timestamp>/``; returns the results."""
    from ws_serve.traces import bursty_trace

    from .report import write_report

    cfg = (cfg or PipelineConfig()).validate()
    name = cfg.run_name or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg.out_dir) / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"{run_dir} exists and is not empty; choose another run name or out dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    import timm

    image_size = int(timm.get_pretrained_cfg(cfg.model).input_size[-1])
    datamodule = make_datamodule(cfg, image_size)
    say(f"1/4 training {cfg.model} on {cfg.dataset} ({image_size}×{image_size}) for {cfg.epochs} epochs "
        f"with Delayed ε-Shrinking")
    net, train = train_supernet(cfg, datamodule, run_dir)
    seconds["train"] = train.seconds
    say(f"    trained in {train.seconds:.0f} s ({train.steps} steps); checkpoint {train.checkpoint}")

    t = time.perf_counter()
    say(f"2/4 evaluating the min, the max and {cfg.candidates} more SubNets (random, then mutations of the "
        f"Pareto front; BN recalibration + held-out accuracy)")
    subnets = evaluate_subnets(net, datamodule, cfg.candidates, cfg.bn_batches, cfg.seed, progress=say)
    served = select_served(subnets, cfg.served_subnets)
    seconds["search"] = time.perf_counter() - t
    say(f"    Pareto front: {sum(s.pareto for s in subnets)} SubNets; serving {len(served)}: "
        + ", ".join(f"{s.id} ({100 * s.accuracy:.1f}%, {s.macs / 1e6:.2f} MMACs)" for s in served))

    t = time.perf_counter()
    say("3/4 profiling the served SubNets' latency on this machine, then the HTTP path's overhead")
    profile = deploy_served_set(train.checkpoint, served, cfg.max_batch, net=net)
    baseline = choose_load(profile, cfg.baseline)[0]
    baseline_id = profile.subnet_ids[baseline]
    sample_shape = (3, image_size, image_size)
    with ws_serve_process(train.checkpoint, f"fixed:{baseline_id}", log=run_dir / "server-calibration.log",
                          max_batch=cfg.max_batch, workers=cfg.workers) as url:
        overhead_ms = measure_overhead(url, cfg.model, sample_shape, profile.latency(baseline, 1))
        _, slo_ms, estimate = choose_load(profile, baseline_id, 1.0, cfg.slo_ms, overhead_ms)
        capacity = measure_capacity(url, cfg.model, sample_shape, slo_ms, start_qps=estimate)
    _, slo_ms, rate = choose_load(profile, baseline_id, cfg.load, cfg.slo_ms, overhead_ms, capacity)
    trace = bursty_trace(0.25 * rate, 0.75 * rate, cfg.cv2, cfg.trace_seconds, seed=cfg.seed)
    trace.save(run_dir / "trace.csv")
    seconds["profile"] = time.perf_counter() - t
    say(f"    HTTP overhead {overhead_ms:.1f} ms per request, fixed-SubNet throughput {capacity:.1f} q/s; "
        f"SLO {slo_ms:.1f} ms; bursty trace: {len(trace)} queries over {cfg.trace_seconds:g} s "
        f"(mean {rate:.1f} q/s, CV² {cfg.cv2:g})")

    t = time.perf_counter()
    policies = [("slackfit", "SlackFit"), (f"fixed:{baseline_id}", f"fixed SubNet {baseline_id} ({cfg.baseline})")]
    runs = []
    for policy, label in policies:
        say(f"4/4 serving with {label}: ws-serve on 127.0.0.1, replaying the trace")
        log = run_dir / f"server-{policy.partition(':')[0]}.log"
        report = serve_and_replay(train.checkpoint, policy, trace, slo_ms, log=log, model=cfg.model,
                                  sample_shape=sample_shape, max_batch=cfg.max_batch, workers=cfg.workers,
                                  overhead_ms=overhead_ms, seed=cfg.seed)
        runs.append(ServingRun(policy, label, report, log))
        say(f"    SLO attainment {report.slo_attainment:.3f}, mean served accuracy {100 * report.mean_accuracy:.2f}%, "
            f"statuses {dict(report.statuses)}")
    seconds["serve"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start

    result = PipelineResult(run_dir, cfg, train, subnets, profile, slo_ms, rate, trace, runs, seconds, overhead_ms,
                            capacity)
    result.report = write_report(result)
    return result

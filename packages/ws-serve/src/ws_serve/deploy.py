"""Assemble a deployment: SuperNet + served set + SubNetAct + profile + workers + router + HTTP app.

Files next to a checkpoint ``ckpt.safetensors`` (all optional, all written atomically):

* ``ckpt.safetensors.served.json`` — the served set (:class:`~ws_serve.profile.ServedSet`);
* ``ckpt.safetensors.subnetnorm.safetensors`` — SubnetNorm statistics of the served SubNets;
* ``ckpt.safetensors.latency-<device>.json`` — the latency table measured on that device;
* ``ckpt.safetensors.blocks.json`` — per-block latency tables, one per device (``latency="predicted"``).

A registered model without a checkpoint is built with a fixed seed, so every process (e.g. each Ray
actor) builds the same weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch

import ws_core  # noqa: F401  (registers the ws_* SuperNets in timm)
from ws_core.checkpoint import CheckpointError, create_from_checkpoint, read_checkpoint_metadata, read_safetensors
from ws_core.supernet import SuperNet

from .backends import make_backend
from .metrics import ServeMetrics
from .policies import make_policy
from .profile import (
    Profile,
    ServedSet,
    block_table_path,
    latency_cache_path,
    pareto_served_set,
    predict_served_profile,
    profile_served,
)
from .runtime import LocalWorker, Router, Worker
from .server import ModelInfo, check_model_name, create_app
from .subnetact import SubNetAct, load_subnet_norm, recalibrated_statistics, save_subnet_norm, subnet_norm_path

__all__ = [
    "LATENCY_SOURCES",
    "DeploySpec",
    "Deployment",
    "build_app",
    "calibrate_subnet_norm",
    "deploy",
    "load_supernet",
    "make_local_workers",
    "read_images",
    "save_served_set",
    "served_set_path",
]

#: where a deployment's latency profile comes from: every SubNet measured, or predicted from blocks
LATENCY_SOURCES = ("measured", "predicted")


def served_set_path(checkpoint: str | os.PathLike) -> Path:
    """``<checkpoint>.served.json``: the served set stored with a checkpoint."""
    return Path(f"{os.fspath(checkpoint)}.served.json")


def load_supernet(model: str | None, checkpoint: str | os.PathLike | None = None, num_classes: int | None = None,
                  seed: int = 0) -> SuperNet:
    """A registered ws-core SuperNet (``timm.create_model``) in eval mode. With a ``checkpoint``, the SuperNet it was
    saved from (:func:`ws_core.checkpoint.create_from_checkpoint`); ``model``, if given, must be its architecture."""
    architecture = None if checkpoint is None else read_checkpoint_metadata(checkpoint)["architecture"]
    model = model or architecture
    registered = timm.list_models("ws_*")
    if model not in registered:
        raise ValueError(f"model must be one of {registered}, got {model!r}")
    if checkpoint is not None and model != architecture:
        raise CheckpointError(f"{checkpoint}: a checkpoint of {architecture!r}, not of the model {model!r} "
                              "(leave the model out to load the checkpoint's)")
    torch.manual_seed(seed)
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    net = timm.create_model(model, **kwargs) if checkpoint is None else create_from_checkpoint(checkpoint, **kwargs)
    return net.eval()


def save_served_set(net: SuperNet, checkpoint: str | os.PathLike, configs: Sequence[Any],
                    accuracies: Sequence[float], statistics: Sequence[Any],
                    source: str = "measured accuracy") -> ServedSet:
    """Store a served set with a checkpoint: ``<checkpoint>.served.json`` (the SubNets, their measured
    ``accuracies`` and, from the in-memory ``net``, their MACs) and ``<checkpoint>.subnetnorm.safetensors``
    (one :class:`ws_core.bn.BNStatistics` per SubNet, e.g. from :func:`ws_core.bn.recalibrate_bn`).
    Both are written atomically; ``ws-serve run --checkpoint`` and :func:`deploy` read them."""
    if not (len(configs) == len(accuracies) == len(statistics)):
        raise ValueError(f"save_served_set: {len(configs)} configs, {len(accuracies)} accuracies and "
                         f"{len(statistics)} statistics; one of each per SubNet")
    served = ServedSet.from_accuracies(net, configs, accuracies, source=source)
    by_id = {s.subnet_id: s for s in statistics}
    missing = [sid for sid in served.ids if sid not in by_id]
    if missing:
        raise ValueError(f"save_served_set: no statistics for SubNets {missing}; got them for {sorted(by_id)}")
    served.save(served_set_path(checkpoint))
    save_subnet_norm(subnet_norm_path(checkpoint), [by_id[sid] for sid in served.ids])
    return served


def calibrate_subnet_norm(net: SuperNet, served: ServedSet, images: torch.Tensor, batch_size: int = 64,
                          checkpoint: str | os.PathLike | None = None) -> list:
    """SubnetNorm statistics of the served set recalibrated on ``images`` (saved next to ``checkpoint``)."""
    if images.dim() != 4 or images.shape[0] < 1:
        raise ValueError(f"calibration images must be [N, C, H, W] with N >= 1, got {list(images.shape)}")
    batches = list(images.split(batch_size))
    stats = recalibrated_statistics(net, served.configs, batches, num_batches=len(batches))
    if checkpoint is not None:
        save_subnet_norm(subnet_norm_path(checkpoint), stats)
    return stats


@dataclass
class DeploySpec:
    """Everything needed to rebuild a deployment in another process (plain JSON-able fields)."""

    model: str | None
    checkpoint: str | None = None
    num_classes: int | None = None
    served: dict[str, Any] | None = None
    device: str = "cpu"
    seed: int = 0

    def build(self) -> SubNetAct:
        """Load the SuperNet and insert SubNetAct for the served set (statistics from the checkpoint's file)."""
        net = load_supernet(self.model, self.checkpoint, self.num_classes, self.seed)
        if self.served is None:
            raise ValueError("DeploySpec.build: the served set is missing")
        act = _insert(net, ServedSet.from_dict(self.served), self.checkpoint)
        act.net.to(self.device)
        return act

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _insert(net: SuperNet, served: ServedSet, checkpoint: str | os.PathLike | None) -> SubNetAct:
    stats = None
    if checkpoint is not None and subnet_norm_path(checkpoint).is_file():
        by_id = {s.subnet_id: s for s in load_subnet_norm(subnet_norm_path(checkpoint))}
        missing = [sid for sid in served.ids if sid not in by_id]
        if missing:
            raise ValueError(f"{subnet_norm_path(checkpoint)} has no SubnetNorm statistics for served SubNets "
                             f"{missing}; recompute them (ws-serve profile --calibrate FILE)")
        stats = by_id
    return SubNetAct(net, served.configs, stats)


@dataclass
class Deployment:
    """A SuperNet deployed with SubNetAct, its served set and its profile."""

    act: SubNetAct
    served: ServedSet
    profile: Profile
    model: ModelInfo
    spec: DeploySpec = field(repr=False, default=None)  # type: ignore[assignment]


def deploy(
    model: str | None,
    checkpoint: str | os.PathLike | None = None,
    *,
    num_classes: int | None = None,
    served: ServedSet | str | os.PathLike | None = None,
    subnets: int = 6,
    max_batch: int = 16,
    device: str = "cpu",
    profile: Profile | str | os.PathLike | None = None,
    profile_warmup: int = 3,
    profile_repeats: int = 10,
    profile_rounds: int = 3,
    seed: int = 0,
    net: SuperNet | None = None,
    backend: str | None = None,
    progress: Callable[[str], None] | None = None,
    name: str | None = None,
    latency: str = "measured",
    latency_anchors: int = 3,
    backend_options: Mapping[str, Any] | None = None,
) -> Deployment:
    """Build a deployment. The served set comes from ``served`` (object or JSON file), else the
    checkpoint's ``.served.json``, else :func:`pareto_served_set` with ``subnets`` SubNets (and is then
    stored with the checkpoint). The profile comes from ``profile`` (object or JSON file) or is measured
    on ``device`` (cached next to the checkpoint) — with the execution ``backend`` that will serve
    (``"auto"``, ``"onnxruntime"``, ...; ``None``: the SuperNet in place, as the eager backend runs it),
    reporting each step to ``progress``. ``net``: the SuperNet already in memory (e.g. just trained;
    SubNetAct is inserted into it) instead of loading ``checkpoint``, whose side files are still read.
    ``name``: the name clients use for the model (:func:`~ws_serve.server.check_model_name`; default: the
    SuperNet's architecture). ``latency="predicted"``: instead of profiling every served SubNet, predict
    the profile from per-block latencies and ``latency_anchors`` SubNets measured whole
    (:func:`~ws_serve.profile.predict_served_profile`; the block table is cached next to the checkpoint).
    ``backend_options`` go to :func:`~ws_serve.backends.make_backend` for the profiling (pass the serving
    workers' options, e.g. ``{"spinning": "run"}``, so that the profile times what will serve)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if latency not in LATENCY_SOURCES:
        raise ValueError(f"latency must be one of {list(LATENCY_SOURCES)}, got {latency!r}")
    if latency_anchors < 0:
        raise ValueError(f"latency_anchors must be >= 0, got {latency_anchors}")
    if name is not None:
        check_model_name(name)
    say = progress if progress is not None else (lambda _line: None)
    ckpt = None if checkpoint is None else os.fspath(checkpoint)
    if net is None:
        say(f"loading {model or 'the SuperNet'}{'' if ckpt is None else f' from {ckpt}'}")
        net = load_supernet(model, ckpt, num_classes, seed)
    else:
        net.eval()
    if isinstance(served, (str, os.PathLike)):
        served = ServedSet.load(served)
    elif served is None and ckpt is not None and served_set_path(ckpt).is_file():
        served = ServedSet.load(served_set_path(ckpt))
    if served is None:
        say(f"choosing {subnets} SubNets to serve (Pareto front of MACs x accuracy)")
        served = pareto_served_set(net, subnets, generator=torch.Generator().manual_seed(seed))
        if ckpt is not None:
            served.save(served_set_path(ckpt))
    act = _insert(net, served, ckpt)
    act.net.to(device)
    if isinstance(profile, (str, os.PathLike)):
        profile = Profile.load(profile)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    sample_shape = tuple(int(v) for v in cfg.get("input_size", (3, 224, 224)))
    if profile is None:
        timing = None
        if backend is not None:
            timing = make_backend(backend, act, **dict(backend_options or {}))
            if progress is not None:
                progress(f"preparing the {timing.name} backend for {len(served)} SubNets")
            timing.prepare(sample_shape, range(1, max_batch + 1))
        if latency == "predicted":
            profile = predict_served_profile(
                act.net, served, max_batch, cache=None if ckpt is None else block_table_path(ckpt),
                anchors=latency_anchors, device=device, warmup=profile_warmup, repeats=profile_repeats,
                rounds=profile_rounds, progress=progress, backend=timing, sample_shape=sample_shape)
        else:
            cache = None if ckpt is None else latency_cache_path(ckpt, device,
                                                                 "eager" if timing is None else timing.name)
            profile = profile_served(act.net, served, max_batch, cache=cache, device=device,
                                     warmup=profile_warmup, repeats=profile_repeats, rounds=profile_rounds,
                                     progress=progress, backend=timing, sample_shape=sample_shape)
    if sorted(profile.subnet_ids) != sorted(served.ids):
        raise ValueError(f"the profile covers SubNets {sorted(profile.subnet_ids)}, the served set is "
                         f"{sorted(served.ids)}")
    if profile.max_batch < max_batch:
        raise ValueError(f"the profile covers batch sizes up to {profile.max_batch}, max_batch is {max_batch}")
    profile = profile.restrict(max_batch)
    architecture = str(cfg.get("architecture") or model or type(net).__name__)
    info = ModelInfo(name or architecture, sample_shape, int(getattr(net, "num_classes", 0)), max_batch, served,
                     extra={"profile_device": profile.device, "profile_note": profile.note})
    spec = DeploySpec(model or architecture, ckpt, num_classes, served.to_dict(), device, seed)
    return Deployment(act, served, profile, info, spec)


def make_local_workers(dep: Deployment, workers: int = 1, backend: str = "auto",
                       devices: Sequence[str] | None = None,
                       backend_options: Mapping[str, Any] | None = None) -> list[Worker]:
    """One :class:`LocalWorker` per device; on CPU, ``workers`` workers sharing one weight copy.
    ``backend_options`` go to :func:`~ws_serve.backends.make_backend` (e.g. ``threads`` for ONNX Runtime)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    device = next(dep.act.net.parameters()).device
    out: list[Worker] = []
    if device.type == "cpu":
        acts = [dep.act] + [dep.act.replica() for _ in range(workers - 1)]
        names = [f"cpu-{i}" for i in range(workers)]
    else:
        devs = list(devices or [str(device)])
        acts = [dep.act] + [dep.act.replica(share_tensors=False) for _ in devs[1:]]
        for a, d in zip(acts[1:], devs[1:]):
            a.net.to(d)
        names = devs
    for a, name in zip(acts, names):
        b = make_backend(backend, a, **dict(backend_options or {}))
        b.prepare(dep.model.sample_shape, range(1, dep.model.max_batch + 1))
        out.append(LocalWorker(b, name))
    return out


def build_app(dep: Deployment, workers: Sequence[Worker], policy: str = "slackfit", *, max_queue: int = 1024,
              late: str = "drop", overhead_ms: float = 1.0, query_cost_ms: float = 0.0,
              default_slo_ms: float = 100.0,
              max_body_bytes: int = 16 * 1024 * 1024, request_timeout_s: float = 30.0, **policy_kwargs: Any):
    """The FastAPI app and its :class:`Router` for a deployment and its workers."""
    router = Router(workers, make_policy(policy, dep.profile, **policy_kwargs), max_queue=max_queue, late=late,
                    overhead_ms=overhead_ms, query_cost_ms=query_cost_ms, metrics=ServeMetrics())
    app = create_app(router, dep.model, default_slo_ms=default_slo_ms, max_body_bytes=max_body_bytes,
                     request_timeout_s=request_timeout_s)
    return app, router


def read_images(path: str | os.PathLike) -> torch.Tensor:
    """The ``images`` tensor of a safetensors file (calibration data)."""
    tensors, _ = read_safetensors(path)
    if "images" not in tensors:
        raise ValueError(f"{path}: expected a tensor named 'images', found {sorted(tensors)}")
    return tensors["images"].float()

"""BatchNorm recalibration of SubNets (OFA ``set_running_statistics``) and storable per-SubNet statistics.

Running statistics accumulated while training a SuperNet mix every SubNet that was sampled; before
measuring a SubNet's accuracy its BN statistics are re-estimated on a few training batches with the
SubNet active. :func:`recalibrate_bn` does that in place — only the channels the SubNet reads are
touched — and returns a :class:`BNStatistics`: the SubNet's statistics as a small object that can be
stored (safetensors) and applied again later (ws-serve's ``SubnetNorm`` builds on it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any

import torch
from torch import Tensor, nn

from .config import SubNetConfig
from .supernet import SuperNet, iter_active_modules

__all__ = ["BNStatistics", "collect_bn_statistics", "kept_bn_buffers", "recalibrate_bn", "restore_bn_buffers",
           "snapshot_bn_buffers"]


def snapshot_bn_buffers(net: nn.Module) -> dict[str, Tensor]:
    """A copy of every BatchNorm buffer of ``net`` (running mean / var, batch counter), for
    :func:`restore_bn_buffers` — e.g. around a recalibration that must not change a training run."""
    return {f"{name}.{b}": getattr(m, b).detach().clone()
            for name, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for b in ("running_mean", "running_var", "num_batches_tracked") if getattr(m, b, None) is not None}


def restore_bn_buffers(net: nn.Module, snapshot: Mapping[str, Tensor]) -> None:
    """Write a :func:`snapshot_bn_buffers` copy back into ``net``, in place."""
    modules = dict(net.named_modules())
    with torch.no_grad():
        for key, value in snapshot.items():
            name, buf = key.rsplit(".", 1)
            getattr(modules[name], buf).copy_(value)


@contextmanager
def kept_bn_buffers(net: nn.Module) -> Iterator[dict[str, Tensor]]:
    """A ``with`` block after which every BatchNorm buffer of ``net`` (running mean / var, batch counter)
    is as it was before, however the block ends; yields the :func:`snapshot_bn_buffers` copy.

    Example::

        >>> with kept_bn_buffers(net):                      # doctest: +SKIP
        ...     stats = recalibrate_bn(net, loader, cfg)    # net's own statistics are restored after
    """
    snapshot = snapshot_bn_buffers(net)
    try:
        yield snapshot
    finally:
        restore_bn_buffers(net, snapshot)


def _active_batchnorms(net: SuperNet) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(name, m) for name, m in iter_active_modules(net)
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def _num_active(bn: nn.Module) -> int:
    return getattr(bn, "active_num_features", bn.num_features)


@dataclass
class BNStatistics:
    """BN running statistics of one SubNet: ``{bn module name: (mean, var)}`` over its active channels."""

    config: SubNetConfig
    stats: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)

    @property
    def subnet_id(self) -> str:
        return self.config.id

    def apply(self, net: SuperNet) -> None:
        """Write these statistics into ``net`` (into the channels the SubNet reads)."""
        modules = dict(net.named_modules())
        with torch.no_grad():
            for name, (mean, var) in self.stats.items():
                bn = modules.get(name)
                if bn is None or not isinstance(bn, nn.modules.batchnorm._BatchNorm):
                    raise ValueError(
                        f"BNStatistics for SubNet {self.subnet_id}: {name!r} is not a BatchNorm of this net"
                    )
                if mean.numel() > bn.num_features:
                    raise ValueError(
                        f"BNStatistics for SubNet {self.subnet_id}: {name!r} has {bn.num_features} channels, "
                        f"statistics for {mean.numel()}"
                    )
                c = mean.numel()
                bn.running_mean[:c].copy_(mean)
                bn.running_var[:c].copy_(var)

    def state_dict(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name, (mean, var) in self.stats.items():
            out[f"{name}.running_mean"] = mean
            out[f"{name}.running_var"] = var
        return out

    @classmethod
    def from_state_dict(cls, config: Mapping[str, Any], state: Mapping[str, Tensor]) -> BNStatistics:
        stats: dict[str, tuple[Tensor, Tensor]] = {}
        for key in state:
            if key.endswith(".running_mean"):
                name = key[: -len(".running_mean")]
                var = state.get(f"{name}.running_var")
                if var is None:
                    raise ValueError(f"BNStatistics: {name}.running_var missing")
                stats[name] = (state[key], var)
        return cls(SubNetConfig(config), stats)

    def save(self, path: str) -> None:
        """Write as one safetensors file (atomic), the config in its metadata."""
        from .checkpoint import atomic_save_safetensors

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_save_safetensors(tensors, path, {"ws_core.kind": "bn_statistics", "config": self.config.to_json()})

    @classmethod
    def load(cls, path: str) -> BNStatistics:
        from .checkpoint import read_safetensors

        tensors, meta = read_safetensors(path)
        if meta.get("ws_core.kind") != "bn_statistics":
            raise ValueError(f"{path}: not a ws-core BN statistics file (kind={meta.get('ws_core.kind')!r})")
        return cls.from_state_dict(json.loads(meta["config"]), tensors)


def collect_bn_statistics(net: SuperNet, cfg: Mapping[str, Any] | SubNetConfig | None = None) -> BNStatistics:
    """Snapshot the running statistics the SubNet ``cfg`` (default: the active one) reads."""
    with net.subnet(cfg) as canonical:
        stats = {name: (bn.running_mean[: _num_active(bn)].detach().clone(),
                        bn.running_var[: _num_active(bn)].detach().clone())
                 for name, bn in _active_batchnorms(net)}
    return BNStatistics(canonical, stats)


@torch.no_grad()
def recalibrate_bn(
    net: SuperNet,
    loader: Iterable,
    cfg: Mapping[str, Any] | SubNetConfig | None = None,
    num_batches: int = 10,
    device: torch.device | str | None = None,
) -> BNStatistics:
    """Re-estimate the BN statistics of SubNet ``cfg`` on ``num_batches`` batches of ``loader``.

    As in OFA, the statistics are the exact average of per-batch means and variances (cumulative
    moving average, ``momentum=None``), computed with the SubNet active, BN layers in training mode
    and everything else (dropout) in eval mode. The result is written into ``net`` and returned.
    Batches may be tensors or ``(inputs, targets, ...)`` tuples. Modes and momenta are restored.

    Example::

        >>> stats = recalibrate_bn(net, train_loader, cfg=net.space.min(), num_batches=10)
        >>> stats.save("min_subnet_bn.safetensors")  # doctest: +SKIP
    """
    if num_batches < 1:
        raise ValueError(f"recalibrate_bn: num_batches must be >= 1, got {num_batches}")
    if device is None:
        device = next(net.parameters()).device
    batches = iter(islice(loader, num_batches))
    first = next(batches, None)
    if first is None:
        raise ValueError("recalibrate_bn: the loader yielded no batches")
    was_training = {m: m.training for m in net.modules()}
    with net.subnet(cfg):
        bns = _active_batchnorms(net)
        momenta = {bn: bn.momentum for _, bn in bns}
        try:
            net.eval()
            for _, bn in bns:
                c = _num_active(bn)
                bn.running_mean[:c].zero_()
                bn.running_var[:c].fill_(1.0)
                bn.num_batches_tracked.zero_()
                bn.momentum = None
                bn.train()
            for batch in chain([first], batches):
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                net(x.to(device))
        finally:
            for bn, momentum in momenta.items():
                bn.momentum = momentum
            for m, mode in was_training.items():
                m.training = mode
        return collect_bn_statistics(net)

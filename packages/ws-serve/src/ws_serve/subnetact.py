"""SubNetAct (SuperServe, NSDI '25, §4.1): deploy one SuperNet, serve any of its SubNets in place.

Three control-flow operators are inserted into a trained ws-core SuperNet by walking its module tree
(the paper's Algorithm 1), so it works on every SuperNet built from ``ws_core.elastic`` layers:

* :class:`LayerSelect` — on every :class:`~ws_core.elastic.ElasticStage`: how many blocks run;
* :class:`WeightSlice` — on every elastic leaf layer (conv, depthwise conv, linear): the active
  setting (channels, kernel) that makes ws-core's layer read a leading slice of its shared weight;
* :class:`SubnetNorm` — on every BatchNorm: the served SubNet's own running statistics
  (sharing one set of statistics across SubNets costs accuracy; per-SubNet statistics are tiny).

Each operator holds a table with one row per *served* SubNet, precomputed at insertion from ws-core's
own actuation (activate the SubNet, read the active settings). The slicing itself stays in ws-core's
elastic layers: nothing is re-sliced or copied here. Actuating a SubNet writes one integer — its
row — into the deployment's :class:`ActuationState`; during the forward every operator looks up its
row. Actuation is therefore a table lookup, independent of the size of the network.

Insertion swaps each module's class for a generated subclass (``WeightSlice[ElasticConv2d]``), the
way ``torch.nn.utils.parametrize`` injects parametrizations: parameter names, state-dict keys and
checkpoints are unchanged, no tensor moves, and :meth:`SubNetAct.remove` restores the original
classes. The per-SubNet statistics are non-persistent buffers (they follow ``.to(device)`` but are not
part of the SuperNet's state dict); :func:`save_subnet_norm` stores them next to the checkpoint.

Example::

    >>> import timm, ws_core
    >>> from ws_serve import SubNetAct
    >>> net = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10).eval()
    >>> act = SubNetAct(net, [net.space.min(), net.space.max()])
    >>> act.actuate(net.space.min().id)           # one integer write, no weight copies
    >>> logits = act(torch.randn(4, 3, 32, 32))   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ws_core.bn import BNStatistics, collect_bn_statistics, kept_bn_buffers, recalibrate_bn
from ws_core.checkpoint import atomic_save_safetensors, read_safetensors
from ws_core.config import SubNetConfig
from ws_core.elastic import ElasticModule, ElasticStage
from ws_core.supernet import SubNet, SuperNet, iter_active_modules

__all__ = [
    "ActuationState",
    "LayerSelect",
    "SubNetAct",
    "SubnetNorm",
    "WeightSlice",
    "load_subnet_norm",
    "recalibrated_statistics",
    "save_subnet_norm",
    "subnet_norm_path",
]

_BatchNorm = nn.modules.batchnorm._BatchNorm


class ActuationState:
    """The row of the SubNet every operator of one deployment routes through (``None``: ws-core's own)."""

    __slots__ = ("row",)

    def __init__(self) -> None:
        self.row: int | None = None

    def __repr__(self) -> str:
        return f"ActuationState(row={self.row})"


class _Operator:
    """Base of the inserted operators; ``_subnetact_base`` is the class that was wrapped."""

    _subnetact_base: type
    _subnetact_state: ActuationState


class LayerSelect(_Operator):
    """Elastic depth of one stage: runs the first ``table[row]`` blocks (wraps ``ElasticStage``)."""

    _layer_select: tuple[int, ...]

    def forward(self, x: Tensor) -> Tensor:
        row = self._subnetact_state.row
        if row is not None:
            self.__dict__["active_depth"] = self._layer_select[row]
        return super().forward(x)  # type: ignore[misc]


class WeightSlice(_Operator):
    """Active setting of one elastic leaf layer per served SubNet (wraps any ``ElasticModule``).

    The row holds the values of the layer's ``active_attrs`` (e.g. ``active_in_channels``,
    ``active_out_channels``); ws-core's layer then reads the matching leading slice (a view) of its
    shared weight. ``None`` rows belong to SubNets that skip the layer's block.
    """

    _weight_slice: tuple[tuple[Any, ...] | None, ...]
    active_attrs: tuple[str, ...]

    def forward(self, x: Tensor) -> Tensor:
        row = self._subnetact_state.row
        if row is not None:
            values = self._weight_slice[row]
            if values is not None:
                attrs = self.__dict__
                for name, value in zip(self.active_attrs, values):
                    attrs[name] = value
        return super().forward(x)  # type: ignore[misc]


class SubnetNorm(_Operator):
    """Per-SubNet BatchNorm statistics (wraps ``nn.BatchNorm2d`` and ws-core's ``ElasticBatchNorm2d``).

    The statistics of every served SubNet that runs this layer are packed into two flat buffers,
    ``subnet_running_mean`` / ``subnet_running_var``; row ``r`` owns ``[offset_r, offset_r + c_r)``
    (its ``c_r`` active channels; SubNets that skip the layer own nothing). The affine parameters are
    the shared leading views, as in ws-core. In training mode, or when no served SubNet is actuated,
    the layer behaves exactly like the wrapped BatchNorm.
    """

    _subnet_norm_channels: tuple[tuple[int, int], ...]  # (offset, channels) per row
    subnet_running_mean: Tensor
    subnet_running_var: Tensor

    def forward(self, x: Tensor) -> Tensor:
        row = self._subnetact_state.row
        if row is None or self.training:
            return super().forward(x)  # type: ignore[misc]
        start, c = self._subnet_norm_channels[row]
        if "active_num_features" in self.__dict__:
            self.__dict__["active_num_features"] = c
        weight, bias = self.weight, self.bias
        return F.batch_norm(
            x, self.subnet_running_mean[start:start + c], self.subnet_running_var[start:start + c],
            None if weight is None else weight[:c], None if bias is None else bias[:c],
            False, 0.0, self.eps,
        )


class _SubNetActRoot(_Operator):
    """Mixed into the SuperNet itself: ``activate`` of a served SubNet also selects its row.

    Everything ws-core does through ``activate``/``subnet`` (``profile_latency``, ``CostModel``,
    ``weight_slices``) keeps working; for served SubNets the forward runs the SubNetAct path.
    """

    _subnetact: SubNetAct

    def activate(self, cfg):
        canonical = super().activate(cfg)  # type: ignore[misc]
        self._subnetact_state.row = self._subnetact._rows_by_config.get(canonical)
        return canonical

    def extract(self, cfg=None):
        base = type(self)._subnetact_base
        with self._subnetact.suspended():
            return base.extract(self, cfg)

    def forward(self, x: Tensor) -> Tensor:
        row = self._subnetact_state.row
        if row is not None:
            size = self._subnetact._resolution[row]
            if size is not None and tuple(x.shape[-2:]) != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return super().forward(x)  # type: ignore[misc]


_OPERATOR_CLASSES: dict[tuple[type, type], type] = {}  # (operator, wrapped class) -> generated subclass


def _operator_class(op: type, base: type) -> type:
    cls = _OPERATOR_CLASSES.get((op, base))
    if cls is None:
        name = "SubNetAct" if op is _SubNetActRoot else op.__name__
        cls = type(f"{name}[{base.__name__}]", (op, base), {"_subnetact_base": base, "__module__": __name__})
        _OPERATOR_CLASSES[(op, base)] = cls
    return cls


def _swap(module: nn.Module, op: type, state: ActuationState, **tables: Any) -> None:
    module.__class__ = _operator_class(op, type(module))
    object.__setattr__(module, "_subnetact_state", state)
    for name, value in tables.items():
        object.__setattr__(module, name, value)


_OPERATOR_ATTRS = ("_subnetact_state", "_layer_select", "_weight_slice", "_subnet_norm_channels", "_subnetact")
_OPERATOR_BUFFERS = ("subnet_running_mean", "subnet_running_var")


def _detach(module: nn.Module) -> tuple[type, dict[str, Any], dict[str, Tensor]]:
    """Restore the wrapped class; return what is needed to re-attach the operator."""
    cls = type(module)
    attrs = {k: module.__dict__.pop(k) for k in _OPERATOR_ATTRS if k in module.__dict__}
    buffers = {k: module._buffers.pop(k) for k in _OPERATOR_BUFFERS if k in module._buffers}
    for k in buffers:
        module._non_persistent_buffers_set.discard(k)
    module.__class__ = cls._subnetact_base
    return cls, attrs, buffers


def _attach(module: nn.Module, stash: tuple[type, dict[str, Any], dict[str, Tensor]]) -> None:
    cls, attrs, buffers = stash
    module.__class__ = cls
    module.__dict__.update(attrs)
    for k, t in buffers.items():
        module._buffers[k] = t
        module._non_persistent_buffers_set.add(k)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _BatchNorm) and module.track_running_stats


def _active_state(module: nn.Module) -> dict[str, Any]:
    return {k: v for k, v in vars(module).items() if k.startswith("active_")}


class SubNetAct:
    """SubNetAct inserted into ``net`` for a served set of SubNets; actuation by SubNet id.

    Args:
        net: a trained ws-core :class:`~ws_core.supernet.SuperNet`; modified in place (see module doc).
        served: the SubNets to serve (configs or dicts); their order defines the rows.
        statistics: per-SubNet BN statistics (:class:`ws_core.bn.BNStatistics`), as a sequence aligned
            with ``served`` or a mapping from SubNet id. ``None``: each SubNet's slice of the SuperNet's
            current running statistics (:func:`ws_core.bn.collect_bn_statistics`), i.e. exactly what
            ``net.extract(cfg)`` would copy. Use :func:`recalibrated_statistics` for real SubnetNorm.

    Raises:
        ValueError: on an empty or duplicated served set, invalid configs, statistics that do not fit,
            or a module with per-SubNet state that the operators cannot route.
    """

    def __init__(
        self,
        net: SuperNet,
        served: Sequence[Mapping[str, Any] | SubNetConfig],
        statistics: Sequence[BNStatistics] | Mapping[str, BNStatistics] | None = None,
    ) -> None:
        if not isinstance(net, SuperNet):
            raise TypeError(f"SubNetAct needs a ws_core SuperNet, got {type(net).__name__}")
        if isinstance(net, _Operator):
            raise ValueError("SubNetAct is already inserted into this SuperNet; call .remove() first")
        if isinstance(served, Mapping) or not len(served):
            raise ValueError("SubNetAct: served must be a non-empty sequence of SubNet configs")
        configs = tuple(net.space.validate(c) for c in served)
        if len(set(configs)) != len(configs):
            dup = sorted({c.id for c in configs if configs.count(c) > 1})
            raise ValueError(f"SubNetAct: served SubNets must be distinct, got duplicates {dup}")
        self.net = net
        self.served = configs
        self.ids = tuple(c.id for c in configs)
        self.state = ActuationState()
        self._rows_by_id = {sid: i for i, sid in enumerate(self.ids)}
        self._rows_by_config = {c: i for i, c in enumerate(configs)}
        self._resolution = tuple(c.get("resolution") for c in configs)
        self._insert(self._statistics(statistics))

    # Construction -------------------------------------------------------------------------------
    def _statistics(self, statistics) -> list[BNStatistics]:
        if statistics is None:
            return [collect_bn_statistics(self.net, c) for c in self.served]
        if isinstance(statistics, Mapping):
            missing = [sid for sid in self.ids if sid not in statistics]
            if missing:
                raise ValueError(f"SubNetAct: no BN statistics for served SubNet(s) {missing}")
            statistics = [statistics[sid] for sid in self.ids]
        statistics = list(statistics)
        if len(statistics) != len(self.served):
            raise ValueError(f"SubNetAct: {len(self.served)} served SubNets but {len(statistics)} BN statistics")
        for cfg, stats in zip(self.served, statistics):
            if self.net.space.validate(stats.config) != cfg:
                raise ValueError(f"SubNetAct: BN statistics of SubNet {stats.subnet_id} given for SubNet {cfg.id}")
        return statistics

    def _insert(self, statistics: list[BNStatistics]) -> None:
        net = self.net
        named = list(net.named_modules())
        stages = [m for _, m in named if isinstance(m, ElasticStage)]
        norms = [(n, m) for n, m in named if _is_norm(m)]
        leaves = [m for _, m in named if isinstance(m, ElasticModule) and not _is_norm(m)]
        wrapped = {id(m) for m in stages} | {id(m) for _, m in norms} | {id(m) for m in leaves}
        others = [(n, m) for n, m in named if id(m) not in wrapped and m is not net]
        depth: dict[int, list[int]] = {id(m): [] for m in stages}
        slices: dict[int, list[tuple | None]] = {id(m): [] for m in leaves}
        channels: dict[int, list[int]] = {id(m): [] for _, m in norms}
        others_state: list[dict[str, Any]] = []
        previous = net.active
        try:
            for cfg in self.served:
                net.activate(cfg)
                active = {id(m) for _, m in iter_active_modules(net)}
                for m in stages:
                    depth[id(m)].append(m.active_depth)
                for m in leaves:
                    slices[id(m)].append(tuple(getattr(m, a) for a in m.active_attrs) if id(m) in active else None)
                for _, m in norms:
                    channels[id(m)].append(getattr(m, "active_num_features", m.num_features) if id(m) in active else 0)
                others_state.append({n: _active_state(m) for n, m in others})
        finally:
            net.activate(previous)
        for name, _ in others:  # a module with per-SubNet state the operators do not route would break outputs
            if any(s[name] != others_state[0][name] for s in others_state[1:]):
                raise ValueError(f"SubNetAct: module {name!r} ({type(net.get_submodule(name)).__name__}) has "
                                 f"per-SubNet state {sorted(others_state[0][name])} that no operator routes")
        norm_stats = self._norm_tables(norms, channels, statistics)
        state = self.state
        for m in stages:
            _swap(m, LayerSelect, state, _layer_select=tuple(depth[id(m)]))
        for m in leaves:
            _swap(m, WeightSlice, state, _weight_slice=tuple(slices[id(m)]))
        for (_, m), (mean, var, index) in zip(norms, norm_stats):
            _swap(m, SubnetNorm, state, _subnet_norm_channels=index)
            m.register_buffer("subnet_running_mean", mean, persistent=False)
            m.register_buffer("subnet_running_var", var, persistent=False)
        _swap(net, _SubNetActRoot, state, _subnetact=self)
        self._modules = [m for _, m in named if isinstance(m, _Operator)]
        self.state.row = self._rows_by_config.get(net.active)

    def _norm_tables(self, norms, channels, statistics: list[BNStatistics]) -> list[tuple[Tensor, Tensor, tuple]]:
        out = []
        for name, m in norms:
            ref = m.running_mean
            means, variances, index, start = [], [], [], 0
            for stats, c in zip(statistics, channels[id(m)]):
                index.append((start, c))
                if c == 0:
                    continue
                pair = stats.stats.get(name)
                if pair is None:
                    raise ValueError(f"SubNetAct: BN statistics of SubNet {stats.subnet_id} lack layer {name!r}")
                if pair[0].numel() != c or pair[1].numel() != c:
                    raise ValueError(f"SubNetAct: BN statistics of SubNet {stats.subnet_id} for {name!r} have "
                                     f"{pair[0].numel()} channels, the SubNet uses {c}")
                means.append(pair[0].reshape(-1).to(ref))
                variances.append(pair[1].reshape(-1).to(ref))
                start += c
            empty = ref.new_zeros(0)
            mean = torch.cat(means) if means else empty
            var = torch.cat(variances) if variances else empty.clone()
            out.append((mean, var, tuple(index)))
        return out

    # Actuation ----------------------------------------------------------------------------------
    def row(self, subnet: int | str | Mapping[str, Any] | SubNetConfig) -> int:
        """Row of a served SubNet given by row, SubNet id or config; ``KeyError`` if it is not served."""
        if isinstance(subnet, int) and not isinstance(subnet, bool):
            if not 0 <= subnet < len(self.ids):
                raise KeyError(f"SubNetAct: row must be in [0, {len(self.ids)}), got {subnet}")
            return subnet
        if isinstance(subnet, str):
            row = self._rows_by_id.get(subnet)
        elif isinstance(subnet, Mapping):
            row = self._rows_by_config.get(subnet if isinstance(subnet, SubNetConfig) else SubNetConfig(subnet))
        else:
            raise TypeError(f"SubNetAct: expected a row, SubNet id or config, got {type(subnet).__name__}")
        if row is None:
            raise KeyError(f"SubNetAct: SubNet {subnet if isinstance(subnet, str) else '(config)'} is not served; "
                           f"served ids: {list(self.ids)}")
        return row

    def actuate(self, subnet: int | str | Mapping[str, Any] | SubNetConfig) -> None:
        """Route later forwards through a served SubNet: one table lookup, no weight copies."""
        row = self._rows_by_id.get(subnet) if isinstance(subnet, str) else None
        if row is None:
            row = self.row(subnet)
        self.state.row = row
        self.net.mark_active(self.served[row])

    def __call__(self, x: Tensor, subnet: int | str | Mapping[str, Any] | None = None) -> Tensor:
        """Forward ``x`` through ``subnet`` (default: the actuated one)."""
        if subnet is not None:
            self.actuate(subnet)
        return self.net(x)

    # Views --------------------------------------------------------------------------------------
    def statistics(self, subnet: int | str | Mapping[str, Any]) -> BNStatistics:
        """The SubnetNorm statistics of one served SubNet, as ws-core's :class:`BNStatistics`."""
        row = self.row(subnet)
        stats = {}
        for name, m in self.net.named_modules():
            if isinstance(m, SubnetNorm):
                start, c = m._subnet_norm_channels[row]
                if c:
                    stats[name] = (m.subnet_running_mean[start:start + c].clone(),
                                   m.subnet_running_var[start:start + c].clone())
        return BNStatistics(self.served[row], stats)

    def extract(self, subnet: int | str | Mapping[str, Any]) -> SubNet:
        """A standalone ws-core ``SubNet`` of one served SubNet with its SubnetNorm statistics (a copy)."""
        row = self.row(subnet)
        stats = self.statistics(row)
        with self.suspended(), kept_bn_buffers(self.net):
            stats.apply(self.net)
            return self.net.extract(self.served[row])

    def nbytes(self) -> dict[str, int]:
        """Bytes held by the deployment: shared weights/buffers and the SubnetNorm tables."""
        tables = sum(b.numel() * b.element_size() for m in self._modules if isinstance(m, SubnetNorm)
                     for b in (m.subnet_running_mean, m.subnet_running_var))
        state = sum(t.numel() * t.element_size() for t in self.net.state_dict().values())
        return {"supernet": state, "subnet_norm": tables, "total": state + tables}

    # Lifecycle ----------------------------------------------------------------------------------
    def remove(self) -> SuperNet:
        """Remove the operators (the SuperNet's classes, state dict and active SubNet are restored)."""
        if getattr(self.net, "_subnetact", None) is not self:
            raise RuntimeError("SubNetAct: operators already removed")
        for m in self._modules:
            _detach(m)
        self.state.row = None
        self.net.activate(self.net.active)
        return self.net

    @contextmanager
    def suspended(self) -> Iterator[SuperNet]:
        """Temporarily run the plain ws-core SuperNet (operators detached, tables kept aside)."""
        row = self.state.row
        stashes = [(m, _detach(m)) for m in self._modules]
        try:
            yield self.net
        finally:
            for m, stash in stashes:
                _attach(m, stash)
            self.state.row = row

    def replica(self, share_tensors: bool = True) -> SubNetAct:
        """A second deployment with its own actuation state.

        With ``share_tensors`` (default) it shares every weight and statistics tensor, so several CPU
        workers serve different SubNets concurrently from one copy of the weights. Without, the tensors
        are copied too (e.g. to move the copy to another device with ``replica.net.to(device)``).
        """
        net = self.net
        memo: dict[int, Any] = {id(self): self}  # the controller is not copied; the clone gets its own below
        if share_tensors:
            memo.update({id(t): t for t in list(net.parameters()) + list(net.buffers())})
        clone = copy.deepcopy(net, memo)  # ws-core blocks drop their actuation plans when copied
        other = object.__new__(SubNetAct)
        other.__dict__.update(self.__dict__)
        other.net = clone
        other.state = clone._subnetact_state
        other._modules = [m for m in clone.modules() if isinstance(m, _Operator)]
        object.__setattr__(clone, "_subnetact", other)
        return other

    def __repr__(self) -> str:
        return f"SubNetAct({type(self.net).__name__}, served={len(self.ids)}, row={self.state.row})"


# Per-SubNet statistics --------------------------------------------------------------------------
def recalibrated_statistics(
    net: SuperNet,
    configs: Iterable[Mapping[str, Any] | SubNetConfig],
    loader: Iterable,
    num_batches: int = 10,
) -> list[BNStatistics]:
    """SubnetNorm statistics: :func:`ws_core.bn.recalibrate_bn` for each SubNet on ``loader``.

    The SuperNet's own running statistics are restored afterwards.
    """
    with kept_bn_buffers(net):
        return [recalibrate_bn(net, loader, cfg, num_batches=num_batches) for cfg in configs]


def subnet_norm_path(checkpoint: str | os.PathLike) -> Path:
    """Where SubnetNorm statistics of a checkpoint live: ``<checkpoint>.subnetnorm.safetensors``."""
    return Path(f"{os.fspath(checkpoint)}.subnetnorm.safetensors")


_KIND = "ws_serve.subnet_norm/1"


def save_subnet_norm(path: str | os.PathLike, statistics: Sequence[BNStatistics]) -> Path:
    """Write per-SubNet BN statistics to one safetensors file (atomic; configs as JSON metadata)."""
    tensors: dict[str, Tensor] = {}
    for stats in statistics:
        for key, t in stats.state_dict().items():
            tensors[f"{stats.subnet_id}/{key}"] = t
    configs = [s.config.to_dict() for s in statistics]
    return atomic_save_safetensors(tensors, path, {"ws_serve.kind": _KIND, "configs": json.dumps(configs)})


def load_subnet_norm(path: str | os.PathLike) -> list[BNStatistics]:
    """Read statistics written by :func:`save_subnet_norm` (no unpickling)."""
    tensors, meta = read_safetensors(path)
    if meta.get("ws_serve.kind") != _KIND:
        raise ValueError(f"{path}: not a SubnetNorm statistics file (kind={meta.get('ws_serve.kind')!r}, "
                         f"expected {_KIND!r})")
    out = []
    for cfg in json.loads(meta["configs"]):
        config = SubNetConfig(cfg)
        prefix = f"{config.id}/"
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        out.append(BNStatistics.from_state_dict(config, state))
    return out

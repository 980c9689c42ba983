"""Cost model of SubNets: MACs, parameters and measured latency.

* :class:`CostModel` counts MACs and parameters of any SubNet analytically: it traces the spatial
  size of every conv/linear output once per resolution (spatial sizes do not depend on widths,
  kernels or depth), then sums ``numel(active weight) × output positions`` over the layers the SubNet
  runs — a fraction of a millisecond per SubNet, fast enough for evolutionary search.
  Parameters equal those of ``extract(cfg)``; MACs count conv and linear layers (the usual convention)
  and, for attention layers (modules with an ``attention_macs(tokens)`` method, e.g.
  :class:`~ws_core.elastic.ElasticAttention`), the sequence-length term of ``q kᵀ`` and ``A v``
  (``2 · N² · heads · head_dim``), which no linear layer contains. A linear layer applied to tokens
  ``[B, N, C]`` counts ``N`` output positions.
* :func:`profile_latency` measures SubNet × batch size latency on a device (warm-up, CUDA
  synchronisation; ``rounds`` sweeps over the whole table, each a median over ``repeats`` timed
  forwards, keeping the minimum median across rounds) and returns a JSON-serialisable :class:`LatencyTable`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .config import SubNetConfig
from .elastic import ElasticModule
from .io import atomic_write_text
from .supernet import SuperNet, iter_active_modules

__all__ = [
    "CostModel",
    "LatencyEntry",
    "LatencyTable",
    "count_macs",
    "count_params",
    "input_hw",
    "profile_latency",
]

_COMPUTE = (nn.Conv2d, nn.Linear)


def _is_attention(module: nn.Module) -> bool:
    """Attention layers add their ``q kᵀ`` / ``A v`` MACs through ``attention_macs(tokens)``."""
    return callable(getattr(module, "attention_macs", None))


def input_hw(
    net: SuperNet, cfg: Mapping[str, Any], input_size: Sequence[int] | int | None = None
) -> tuple[int, int]:
    """Input ``(H, W)`` of SubNet ``cfg``: its resolution, else ``input_size``, else the pretrained cfg's."""
    if "resolution" in cfg:
        r = int(cfg["resolution"])
        return (r, r)
    if input_size is None:
        input_size = (getattr(net, "pretrained_cfg", None) or {}).get("input_size")
        if input_size is None:
            raise ValueError("cost: the search space has no 'resolution' and no input_size was given")
    if isinstance(input_size, int):
        return (input_size, input_size)
    return (int(input_size[-2]), int(input_size[-1]))


class CostModel:
    """MACs and parameter counts of the SubNets of one SuperNet.

    Example::

        >>> costs = CostModel(net)
        >>> costs.macs(net.space.min()) < costs.macs(net.space.max())
        True
    """

    def __init__(self, net: SuperNet, input_size: Sequence[int] | int | None = None) -> None:
        self.net = net
        self.input_size = input_size
        self._positions: dict[tuple[int, int], dict[str, int]] = {}

    def output_positions(self, hw: tuple[int, int]) -> dict[str, int]:
        """Output positions of every conv/linear layer at input ``hw``: ``H_out·W_out`` for convs, the
        number of tokens for linear layers on ``[B, N, C]`` (1 on ``[B, C]``); for attention layers, the
        sequence length ``N``.

        One forward of the largest SubNet at that size covers every SubNet; cached per ``hw``.
        """
        hw = (int(hw[0]), int(hw[1]))
        positions = self._positions.get(hw)
        if positions is not None:
            return positions
        net, positions, hooks = self.net, {}, []

        def record(name):
            def hook(module, inputs, output):
                channels = output.shape[-1] if isinstance(module, nn.Linear) else output.shape[1]
                positions[name] = output.numel() // (output.shape[0] * channels)
            return hook

        def record_tokens(name):
            def hook(module, inputs, output):
                positions[name] = inputs[0].shape[-2]
            return hook

        for name, module in net.named_modules():
            if isinstance(module, _COMPUTE):
                hooks.append(module.register_forward_hook(record(name)))
            elif _is_attention(module):
                hooks.append(module.register_forward_hook(record_tokens(name)))
        cfg = net.space.max()
        if "resolution" in net.space:
            cfg = cfg.replace(resolution=net.space["resolution"].choices[-1])
        was_training = net.training
        ref = next(net.parameters())
        try:
            net.eval()
            with torch.no_grad(), net.subnet(cfg):
                # stem → stages → head at exactly ``hw`` (``forward`` would resize to the active resolution)
                x = torch.zeros(1, getattr(net, "in_chans", 3), *hw, device=ref.device, dtype=ref.dtype)
                net.forward_head(net.forward_features(x))
        finally:
            for h in hooks:
                h.remove()
            net.train(was_training)
        self._positions[hw] = positions
        return positions

    def _active_shapes(self) -> Iterable[tuple[str, nn.Module, dict[str, tuple[int, ...]]]]:
        for name, module in iter_active_modules(self.net):
            if isinstance(module, ElasticModule):
                yield name, module, module.active_parameter_shapes()
            else:
                yield name, module, {n: tuple(p.shape) for n, p in module._parameters.items() if p is not None}

    def layer_macs(self, cfg: Mapping[str, Any] | SubNetConfig | None = None) -> dict[str, int]:
        """MACs of every conv/linear layer SubNet ``cfg`` runs, in execution order, by module name; an
        attention layer's entry (its own name) holds its ``q kᵀ`` and ``A v`` MACs."""
        with self.net.subnet(cfg) as canonical:
            positions = self.output_positions(input_hw(self.net, canonical, self.input_size))
            out = {}
            for name, module, shapes in self._active_shapes():
                if isinstance(module, _COMPUTE):
                    out[name] = math.prod(shapes["weight"]) * positions[name]
                elif _is_attention(module):
                    out[name] = module.attention_macs(positions[name])
            return out

    def macs(self, cfg: Mapping[str, Any] | SubNetConfig | None = None) -> int:
        """Multiply-accumulates of one forward of one sample through SubNet ``cfg``."""
        return sum(self.layer_macs(cfg).values())

    def params(self, cfg: Mapping[str, Any] | SubNetConfig | None = None) -> int:
        """Parameters of SubNet ``cfg`` (equals ``sum(p.numel() for p in net.extract(cfg).parameters())``)."""
        with self.net.subnet(cfg):
            return sum(math.prod(s) for _, _, shapes in self._active_shapes() for s in shapes.values())


def count_macs(
    net: SuperNet, cfg: Mapping[str, Any] | None = None, input_size: Sequence[int] | int | None = None
) -> int:
    """MACs of SubNet ``cfg`` (one-off; use :class:`CostModel` when counting many SubNets)."""
    return CostModel(net, input_size).macs(cfg)


def count_params(net: SuperNet, cfg: Mapping[str, Any] | None = None) -> int:
    """Parameters of SubNet ``cfg``."""
    return CostModel(net).params(cfg)


@dataclass(frozen=True)
class LatencyEntry:
    """One (SubNet, batch size): the lowest per-round median over ``rounds`` rounds of ``repeats`` timed
    forwards, and the p90 of that round (tables written before rounds existed load with ``rounds=1``)."""

    subnet_id: str
    config: dict[str, Any]
    batch_size: int
    median_ms: float
    p90_ms: float
    repeats: int
    rounds: int = 1


@dataclass
class LatencyTable:
    """Measured latency per (SubNet, batch size) on one device; JSON round-trippable."""

    device: str
    device_name: str
    mode: str
    torch_version: str = torch.__version__
    threads: int = field(default_factory=torch.get_num_threads)
    entries: list[LatencyEntry] = field(default_factory=list)

    def latency_ms(self, subnet: str | Mapping[str, Any], batch_size: int) -> float:
        sid = subnet if isinstance(subnet, str) else SubNetConfig(subnet).id
        for e in self.entries:
            if e.subnet_id == sid and e.batch_size == batch_size:
                return e.median_ms
        raise KeyError(f"no latency measured for SubNet {sid} at batch size {batch_size}")

    @property
    def subnet_ids(self) -> list[str]:
        return list(dict.fromkeys(e.subnet_id for e in self.entries))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyTable:
        d = dict(d)
        entries = [LatencyEntry(**e) for e in d.pop("entries", [])]
        return cls(**d, entries=entries)

    @classmethod
    def from_json(cls, s: str) -> LatencyTable:
        return cls.from_dict(json.loads(s))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.to_json(indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        with open(path) as f:
            return cls.from_json(f.read())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch_label(batch_sizes: Sequence[int]) -> str:
    b = [int(v) for v in batch_sizes]
    if len(b) > 2 and b == list(range(b[0], b[-1] + 1)):
        return f"{b[0]}..{b[-1]}"
    return ", ".join(map(str, b))


@torch.inference_mode()
def profile_latency(
    net: SuperNet,
    configs: Iterable[Mapping[str, Any]],
    batch_sizes: Sequence[int] = (1,),
    device: torch.device | str | None = None,
    warmup: int = 5,
    repeats: int = 20,
    mode: str = "active",
    input_size: Sequence[int] | int | None = None,
    *,
    rounds: int = 1,
    progress: Callable[[str], None] | None = None,
    timer: Callable[[], float] = time.perf_counter,
    forward: Callable[[int, SubNetConfig], Any] | None = None,
) -> LatencyTable:
    """Latency of each SubNet at each batch size: the minimum over ``rounds`` of the median of ``repeats``.

    Each round sweeps every (SubNet, batch size) once — ``warmup`` untimed forwards, then ``repeats``
    timed ones — so the rounds are spread over time and a round disturbed by other load is discarded
    by the minimum. The p90 reported is that of the round with the lowest median.

    Args:
        mode: ``"active"`` times the SuperNet with the SubNet activated in place (how ws-serve runs);
            ``"extract"`` times the extracted standalone SubNet.
        device: where to run (default: the net's device); CUDA work is synchronised around each timing.
        rounds: measurement rounds (>= 1).
        progress: called with one line per SubNet and round, e.g.
            ``"profiling SubNet 3/6 (12.3 MMACs) batch 1..8, round 1/3"``.
        timer: clock in seconds (injectable for tests).
        forward: ``forward(batch_size, config)`` runs one forward of a batch through that SubNet some
            other way — a serving backend (ONNX Runtime, TensorRT), which holds its own inputs — and is
            timed instead of the net (``mode`` then only names the table).
    """
    if mode not in ("active", "extract") and forward is None:
        raise ValueError(f"profile_latency: mode must be 'active' or 'extract', got {mode!r}")
    if warmup < 0 or repeats < 1 or rounds < 1:
        raise ValueError(f"profile_latency: need warmup >= 0, repeats >= 1 and rounds >= 1, got {warmup}, "
                         f"{repeats}, {rounds}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"profile_latency: batch sizes must be >= 1, got {list(batch_sizes)}")
    ref = next(net.parameters())
    device = torch.device(device) if device is not None else ref.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    table = LatencyTable(device=str(device), device_name=name, mode=mode)
    was_training = net.training
    net.eval()
    canonicals = [net.space.validate(cfg) for cfg in configs]
    label = _batch_label(batch_sizes)
    best: dict[tuple[int, int], tuple[float, float]] = {}  # (config index, batch) -> (median, p90)
    models: dict[int, nn.Module] = {}
    try:
        macs = [CostModel(net, input_size).macs(c) for c in canonicals] if progress is not None else []
        for r in range(rounds):
            for i, canonical in enumerate(canonicals):
                if progress is not None:
                    progress(f"profiling SubNet {i + 1}/{len(canonicals)} ({macs[i] / 1e6:.1f} MMACs) batch {label}"
                             + (f", round {r + 1}/{rounds}" if rounds > 1 else ""))
                if i not in models:
                    models[i] = net.extract(canonical).to(device).eval() if mode == "extract" and forward is None \
                        else net
                model = models[i]
                hw = input_hw(net, canonical, input_size)
                for b in batch_sizes:
                    x = torch.randn(int(b), getattr(net, "in_chans", 3), *hw, device=device, dtype=ref.dtype)
                    times = []
                    with net.subnet(canonical):
                        for k in range(warmup + repeats):
                            _sync(device)
                            t0 = timer()
                            if forward is None:
                                model(x)
                            else:
                                forward(int(b), canonical)
                            _sync(device)
                            if k >= warmup:
                                times.append((timer() - t0) * 1e3)
                    times.sort()
                    median, p90 = statistics.median(times), times[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)]
                    key = (i, int(b))
                    if key not in best or median < best[key][0]:
                        best[key] = (median, p90)
        for i, canonical in enumerate(canonicals):
            for b in batch_sizes:
                median, p90 = best[(i, int(b))]
                table.entries.append(LatencyEntry(canonical.id, canonical.to_dict(), int(b), median, p90, repeats,
                                                  rounds))
    finally:
        net.train(was_training)
    return table

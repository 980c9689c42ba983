"""SushiAccel's role: an analytical accelerator cost model with a SubGraph-Stationary weight cache.

The model (parameters from a :class:`~ws_sushi.hardware.HardwareProfile`) runs a SubNet layer by
layer. A *layer* is one conv or linear layer fused with the tensors that follow it until the next one
(its BatchNorm, kernel-transform matrices), as an inference accelerator folds them. For a layer with
``macs`` multiply-accumulates whose weights need ``fetch`` bytes that the cached SubGraph does not
hold::

    compute = (ceil(macs / (macs_per_cycle · mac_utilization)) + layer_overhead_cycles) / clock_hz
    fetch   = fetch_bytes / offchip_bandwidth
    latency = max(compute, fetch)   if overlap_fetch (double-buffered weight streaming)
              compute + fetch       otherwise
    energy  = macs · e_mac + weight_bytes · e_onchip + fetch_bytes · e_offchip

Activations are assumed to stay on chip and cost the same under every caching policy, so they are
not modelled.

**Measured compute** (``SushiAccel(profile, compute_ms=...)``): where the SubNets' compute has been
measured on the device — typically ws-core's per-block latency table
(``BlockLatencyTable(...).as_cost(net)``, or ``lambda cfg: table.predict(net, cfg)`` for a table
measured elsewhere), which gives the latency of SubNets never run whole — a SubNet's ``compute`` is
that latency (batch 1), spread over its layers in proportion to their MACs; the weight fetch stays
modelled from the profile. The layer equations are then the same with this ``compute``.

Per-layer MACs are counted exactly as :class:`ws_core.cost.CostModel` counts them
(``numel(active weight) × output positions``, output positions traced once per resolution);
:func:`layer_macs` sums to ``CostModel(net).macs(cfg)``.

Example::

    >>> accel = SushiAccel(load_profile("zcu104"))
    >>> layout = subnet_layout(net, net.space.max())
    >>> accel.query_cost(layout).latency_s > accel.query_cost(layout, cached=layout.subgraph).latency_s
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ws_core.cost import CostModel, input_hw
from ws_core.elastic import ElasticModule

from .hardware import HardwareProfile, load_profile
from .subgraph import SubGraph, check_bits, subnet_subgraph

__all__ = [
    "CandidateCosts",
    "LayerCost",
    "QueryCost",
    "SubNetLayout",
    "SushiAccel",
    "layer_macs",
    "output_positions",
    "subnet_layout",
]

_COMPUTE = (nn.Conv2d, nn.Linear)
_MAX_DIMS = 4  # conv weights are 4-D; lower-rank regions are padded with [0, 1)


def output_positions(net: Any, hw: tuple[int, int]) -> dict[str, int]:
    """Output positions (``H_out · W_out``; 1 for linear layers) of every conv/linear layer at input ``hw``.

    Delegates to :meth:`ws_core.cost.CostModel.output_positions`; keep the result when building many layouts.
    """
    return CostModel(net).output_positions(hw)


def _active_weight_numel(module: nn.Module) -> int:
    if isinstance(module, ElasticModule):
        return math.prod(module.active_parameter_shapes()["weight"])
    return module.weight.numel()


@dataclass(frozen=True)
class SubNetLayout:
    """What the cost model needs of one SubNet: its fused layers, their MACs, and its SubGraph.

    Attributes:
        config: the canonical SubNet config.
        subgraph: the SubGraph the SubNet reads.
        layers: fused layer names in execution order (a conv/linear layer's module name).
        macs: MACs per layer (same order).
        positions: output positions per layer (MACs per weight element; 1 for linear layers).
        tensor_layer: for every tensor of ``subgraph``, the index of its layer in ``layers``.
    """

    config: Any
    subgraph: SubGraph
    layers: tuple[str, ...]
    macs: tuple[int, ...]
    positions: tuple[int, ...]
    tensor_layer: Mapping[str, int]

    @property
    def total_macs(self) -> int:
        return sum(self.macs)

    def layer_weight_bytes(self, bits: int) -> list[int]:
        out = [0] * len(self.layers)
        for key, nbytes in self.subgraph.tensor_bytes(bits).items():
            out[self.tensor_layer[key]] += nbytes
        return out


def _owner(key: str, modules: Mapping[str, nn.Module]) -> tuple[str, nn.Module | None]:
    """The module that holds state-dict entry ``key`` (the longest module-name prefix)."""
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:i])
        module = modules.get(name)
        if module is not None:
            return name, module
    return "", None


def subnet_layout(
    net: Any,
    cfg: Mapping[str, Any],
    input_size: Sequence[int] | int | None = None,
    positions: Mapping[str, int] | None = None,
) -> SubNetLayout:
    """The :class:`SubNetLayout` of SubNet ``cfg`` of ``net`` (MACs at its resolution or ``input_size``).

    Args:
        positions: output positions from :func:`output_positions` at the SubNet's input size
            (computed when omitted; pass them when building many layouts).

    Raises:
        ValueError: if ``cfg`` is outside the SuperNet's search space.
    """
    subgraph = subnet_subgraph(net, cfg)  # validates cfg
    with net.subnet(cfg) as canonical:
        if positions is None:
            positions = output_positions(net, input_hw(net, canonical, input_size))
        modules = dict(net.named_modules())
        layers: list[str] = []
        macs: list[int] = []
        pos: list[int] = []
        tensor_layer: dict[str, int] = {}
        pending: list[str] = []
        for key in subgraph:
            owner_name, module = _owner(key, modules)
            if isinstance(module, _COMPUTE) and (not layers or layers[-1] != owner_name):
                layers.append(owner_name)
                macs.append(_active_weight_numel(module) * positions[owner_name])
                pos.append(positions[owner_name])
                for p in pending:  # tensors before the first compute layer join it
                    tensor_layer[p] = 0
                pending = []
            if not layers:
                pending.append(key)
                continue
            tensor_layer[key] = len(layers) - 1
        if pending:
            raise ValueError(f"SubNet {canonical.id} reads no conv or linear layer; nothing to run on the accelerator")
    return SubNetLayout(canonical, subgraph, tuple(layers), tuple(macs), tuple(pos), tensor_layer)


def layer_macs(net: Any, cfg: Mapping[str, Any], input_size: Sequence[int] | int | None = None) -> dict[str, int]:
    """MACs of every conv/linear layer SubNet ``cfg`` runs (sums to ``CostModel(net).macs(cfg)``)."""
    layout = subnet_layout(net, cfg, input_size)
    return dict(zip(layout.layers, layout.macs))


@dataclass(frozen=True)
class LayerCost:
    """Cost of one fused layer of one query."""

    name: str
    macs: int
    weight_bytes: int
    fetch_bytes: int
    compute_s: float
    fetch_s: float
    latency_s: float


@dataclass(frozen=True)
class QueryCost:
    """Cost of running one SubNet once (batch 1) with a given SubGraph cached."""

    latency_s: float
    macs: int
    weight_bytes: int
    fetch_bytes: int
    compute_energy_j: float
    onchip_energy_j: float
    offchip_energy_j: float
    layers: tuple[LayerCost, ...]

    @property
    def energy_j(self) -> float:
        return self.compute_energy_j + self.onchip_energy_j + self.offchip_energy_j


class SushiAccel:
    """The accelerator cost model (see the module docstring for the equations).

    Args:
        profile: a :class:`HardwareProfile`, a built-in profile name or a profile JSON path.
        bits: weight bit-width (default: the profile's ``weight_bits``).
        compute_ms: ``compute_ms(config) -> ms``, the measured compute latency of a SubNet at batch 1 on
            the device (see the module doc); ``None``: the profile's MAC-array equation.
    """

    def __init__(self, profile: HardwareProfile | str, bits: int | None = None, *,
                 compute_ms: Callable[[Any], float] | None = None) -> None:
        self.profile = load_profile(profile)
        self.bits = check_bits(self.profile.weight_bits if bits is None else bits)
        self.compute_ms = compute_ms

    def __repr__(self) -> str:
        measured = "" if self.compute_ms is None else ", compute measured"
        return f"SushiAccel({self.profile.name!r}, bits={self.bits}{measured})"

    def layer_compute_seconds(self, layout: SubNetLayout) -> list[float]:
        """Compute time of each layer of ``layout``: the MAC-array equation, or with ``compute_ms`` the
        SubNet's measured latency spread over its layers in proportion to their MACs."""
        if self.compute_ms is None:
            return [self.compute_seconds(m) for m in layout.macs]
        total_ms = float(self.compute_ms(layout.config))
        if not math.isfinite(total_ms) or total_ms < 0:
            raise ValueError(f"compute_ms returned {total_ms!r} for SubNet {getattr(layout.config, 'id', '?')}; "
                             f"expected a latency >= 0 in ms")
        macs = layout.total_macs
        n = len(layout.macs)
        return [total_ms * 1e-3 * (m / macs if macs else 1 / n) for m in layout.macs]

    # Pure per-layer equations -------------------------------------------------------------------
    def compute_seconds(self, macs: int) -> float:
        """Time of ``macs`` MACs on the array, plus the per-layer overhead (0 for an empty layer)."""
        p = self.profile
        if macs <= 0:
            return 0.0
        cycles = math.ceil(macs / (p.macs_per_cycle * p.mac_utilization)) + p.layer_overhead_cycles
        return cycles / p.clock_hz

    def fetch_seconds(self, nbytes: int) -> float:
        """Time to fetch ``nbytes`` from off-chip memory."""
        return nbytes / self.profile.offchip_bandwidth_bytes_per_s

    def layer_latency(self, macs: int, fetch_bytes: int, compute_s: float | None = None) -> float:
        """Latency of one layer: ``max`` (overlapped) or sum of compute and uncached-weight fetch
        (``compute_s``: a measured compute time instead of the equation's for ``macs``)."""
        c = self.compute_seconds(macs) if compute_s is None else compute_s
        f = self.fetch_seconds(fetch_bytes)
        return max(c, f) if self.profile.overlap_fetch else c + f

    def energy(self, macs: int, weight_bytes: int, fetch_bytes: int) -> tuple[float, float, float]:
        """``(compute, on-chip, off-chip)`` energy in joules."""
        p = self.profile
        return (macs * p.energy_pj_per_mac * 1e-12, weight_bytes * p.energy_pj_per_onchip_byte * 1e-12,
                fetch_bytes * p.energy_pj_per_offchip_byte * 1e-12)

    # One query ----------------------------------------------------------------------------------
    def query_cost(self, layout: SubNetLayout, cached: SubGraph | None = None) -> QueryCost:
        """Latency and energy of one forward of ``layout``'s SubNet with ``cached`` on chip."""
        weight = layout.layer_weight_bytes(self.bits)
        held = [0] * len(layout.layers)
        if cached is not None and len(cached):
            for key, nbytes in layout.subgraph.intersect(cached).tensor_bytes(self.bits).items():
                held[layout.tensor_layer[key]] += nbytes
        layers = []
        compute = self.layer_compute_seconds(layout)
        for name, macs, w, h, c in zip(layout.layers, layout.macs, weight, held, compute):
            fetch = w - h
            layers.append(LayerCost(name, macs, w, fetch, c, self.fetch_seconds(fetch),
                                    self.layer_latency(macs, fetch, c)))
        macs, wb, fb = layout.total_macs, sum(weight), sum(weight) - sum(held)
        compute_e, onchip_e, offchip_e = self.energy(macs, wb, fb)
        return QueryCost(sum(lc.latency_s for lc in layers), macs, wb, fb, compute_e, onchip_e, offchip_e,
                         tuple(layers))

    def candidates(self, layouts: Sequence[SubNetLayout]) -> CandidateCosts:
        """Vectorised costs of many SubNets under any cached SubGraph (for schedulers and simulation)."""
        return CandidateCosts(self, layouts)


class CandidateCosts:
    """Latency, off-chip bytes and energy of a fixed set of SubNets under any cached SubGraph, vectorised.

    Equal to :meth:`SushiAccel.query_cost` SubNet by SubNet; results per SubGraph are memoised.
    """

    def __init__(self, accel: SushiAccel, layouts: Sequence[SubNetLayout], memo_size: int = 4096) -> None:
        if not layouts:
            raise ValueError("CandidateCosts: needs at least one SubNet layout, got none")
        self.accel, self.layouts = accel, list(layouts)
        bits = accel.bits
        keys: dict[str, int] = {}
        layer_names: dict[str, int] = {}
        for lay in self.layouts:
            for key in lay.subgraph:
                keys.setdefault(key, len(keys))
            for name in lay.layers:
                layer_names.setdefault(name, len(layer_names))
        self.keys, self.layer_names = list(keys), list(layer_names)
        n, t, nl = len(self.layouts), len(keys), len(layer_names)
        self._start = np.zeros((n, t, _MAX_DIMS), dtype=np.int64)
        self._stop = np.zeros((n, t, _MAX_DIMS), dtype=np.int64)
        self.macs = np.zeros((n, nl), dtype=np.int64)
        self.layer_positions = np.zeros(nl, dtype=np.int64)
        key_layer = np.full(t, -1, dtype=np.int64)
        for i, lay in enumerate(self.layouts):
            for name, m, p in zip(lay.layers, lay.macs, lay.positions):
                self.macs[i, layer_names[name]] = m
                self.layer_positions[layer_names[name]] = p
            for key, region in lay.subgraph.items():
                j = keys[key]
                if len(region) > _MAX_DIMS:
                    raise ValueError(f"CandidateCosts: tensor {key!r} has {len(region)} dims, at most {_MAX_DIMS}")
                self._start[i, j, :] = 0
                self._stop[i, j, :] = 1
                for d, s in enumerate(region):
                    self._start[i, j, d], self._stop[i, j, d] = s.start, s.stop
                layer = layer_names[lay.layers[lay.tensor_layer[key]]]
                if key_layer[j] not in (-1, layer):
                    raise ValueError(f"CandidateCosts: tensor {key!r} belongs to different layers in different SubNets")
                key_layer[j] = layer
        self._onehot = np.zeros((t, nl), dtype=np.float64)
        self._onehot[np.arange(t), key_layer] = 1.0
        numel = np.clip(self._stop - self._start, 0, None).prod(-1)
        self._tensor_bytes = (numel * bits + 7) // 8                      # [N, T]
        self.weight_bytes = self._tensor_bytes.sum(1)                       # [N]
        self._layer_weight = self._tensor_bytes.astype(np.float64) @ self._onehot  # [N, L]
        p = accel.profile
        if accel.compute_ms is None:
            cycles = np.ceil(self.macs / (p.macs_per_cycle * p.mac_utilization)) + p.layer_overhead_cycles
            self._compute_s = np.where(self.macs > 0, cycles / p.clock_hz, 0.0)  # [N, L]
        else:
            self._compute_s = np.zeros((n, nl), dtype=np.float64)
            for i, lay in enumerate(self.layouts):
                for name, c in zip(lay.layers, accel.layer_compute_seconds(lay)):
                    self._compute_s[i, layer_names[name]] = c
        self.total_macs = self.macs.sum(1)
        self._memo: dict[SubGraph, tuple[np.ndarray, np.ndarray]] = {}
        self._memo_size = memo_size

    def __len__(self) -> int:
        return len(self.layouts)

    def _cached_bytes(self, cached: SubGraph) -> np.ndarray:
        t = len(self.keys)
        gstart = np.zeros((t, _MAX_DIMS), dtype=np.int64)
        gstop = np.zeros((t, _MAX_DIMS), dtype=np.int64)
        index = {k: j for j, k in enumerate(self.keys)}
        for key, region in cached.items():
            j = index.get(key)
            if j is None:
                continue
            gstop[j, :] = 1
            for d, s in enumerate(region):
                gstart[j, d], gstop[j, d] = s.start, s.stop
        lo = np.maximum(self._start, gstart[None])
        hi = np.minimum(self._stop, gstop[None])
        numel = np.clip(hi - lo, 0, None).prod(-1)
        return (numel * self.accel.bits + 7) // 8                            # [N, T]

    def evaluate(self, cached: SubGraph | None) -> tuple[np.ndarray, np.ndarray]:
        """``(latency_s [N], fetch_bytes [N])`` of every SubNet with ``cached`` on chip."""
        cached = cached if cached is not None else SubGraph()
        hit = self._memo.get(cached)
        if hit is not None:
            return hit
        if len(cached):
            held = self._cached_bytes(cached)
            fetch_t = self._tensor_bytes - held
        else:
            fetch_t = self._tensor_bytes
        fetch_layer = fetch_t.astype(np.float64) @ self._onehot              # [N, L]
        fetch_s = fetch_layer / self.accel.profile.offchip_bandwidth_bytes_per_s
        overlap = self.accel.profile.overlap_fetch
        lat = np.maximum(self._compute_s, fetch_s) if overlap else self._compute_s + fetch_s
        result = (lat.sum(1), fetch_t.sum(1))
        if len(self._memo) >= self._memo_size:
            self._memo.pop(next(iter(self._memo)))
        self._memo[cached] = result
        return result

    def latency(self, cached: SubGraph | None) -> np.ndarray:
        """Latency in seconds of every SubNet with ``cached`` on chip."""
        return self.evaluate(cached)[0]

    def fetch_bytes(self, cached: SubGraph | None) -> np.ndarray:
        """Off-chip weight bytes of every SubNet with ``cached`` on chip."""
        return self.evaluate(cached)[1]

    def offchip_energy_j(self, nbytes: np.ndarray | int) -> np.ndarray | float:
        return np.asarray(nbytes) * self.accel.profile.energy_pj_per_offchip_byte * 1e-12

    def energy_j(self, cached: SubGraph | None) -> np.ndarray:
        """Total energy (compute + on-chip + off-chip) of every SubNet with ``cached`` on chip."""
        p = self.accel.profile
        return (self.total_macs * p.energy_pj_per_mac + self.weight_bytes * p.energy_pj_per_onchip_byte
                + self.fetch_bytes(cached) * p.energy_pj_per_offchip_byte) * 1e-12

    def tensor_priority(self) -> dict[str, int]:
        """Per tensor, the output positions of its layer (MACs per weight element): low = memory-bound."""
        layer_of = self._onehot.argmax(1)
        return {key: int(self.layer_positions[layer_of[j]]) for j, key in enumerate(self.keys)}


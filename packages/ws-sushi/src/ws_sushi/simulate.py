"""Simulation of a query stream served by SubNets of one SuperNet on one SushiAccel-style device.

One accelerator serves queries first come, first served, one at a time (batch 1, no preemption, no
query is dropped). For each query SushiSched picks a SubNet from the candidates
(:func:`~ws_sushi.sched.select_subnets`) with the budget ``latency target − time already waited``
and the latencies the SubNets have *with the SubGraph cached now*; the query then takes that
latency (:class:`~ws_sushi.accel.CandidateCosts`). After each query the cache policy may choose a
new SubGraph; loading the part of it that is not cached yet costs off-chip traffic (energy) and
occupies the accelerator for ``bytes / bandwidth`` before the next query starts. The initial SubGraph
is loaded before the stream starts and is not charged.

Compared policies (:mod:`ws_sushi.sched`): ``no-cache`` (every query fetches all its weights),
``static`` (the largest SubGraph common to all candidates, fixed) and ``sgs`` (SubGraph Stationary,
re-planned from the recent query mix).

Example::

    >>> system = build_system(net, table, "zcu104")
    >>> results = compare_policies(stream, system, [NoCache(), StaticCache(), SubGraphStationary()])
    >>> print(format_summary(results))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ws_core.cost import input_hw

from .accel import CandidateCosts, SubNetLayout, SushiAccel, output_positions, subnet_layout
from .accuracy import AccuracyTable
from .hardware import HardwareProfile
from .sched import CachePolicy, SchedContext, _check_objective, select_subnets
from .stream import QueryStream
from .subgraph import supernet_subgraph

__all__ = ["SimulationResult", "SushiSystem", "build_system", "compare_policies", "format_summary", "simulate"]


@dataclass
class SushiSystem:
    """Everything a simulation needs about the SuperNet, its candidate SubNets and the device."""

    accel: SushiAccel
    table: AccuracyTable
    layouts: list[SubNetLayout]
    costs: CandidateCosts
    accuracy: np.ndarray
    capacity_bytes: int
    supernet_bytes: int
    model_name: str = ""

    @property
    def bits(self) -> int:
        return self.accel.bits

    def context(self, objective: str = "accuracy") -> SchedContext:
        return SchedContext(self.costs.evaluate, self.accuracy, [lay.subgraph for lay in self.layouts],
                            self.capacity_bytes, self.bits, self.costs.tensor_priority(), objective)


def build_system(
    net: Any,
    table: AccuracyTable,
    profile: HardwareProfile | str,
    bits: int | None = None,
    cache_bytes: int | None = None,
    input_size: Sequence[int] | int | None = None,
    compute_ms: Callable[[Any], float] | None = None,
) -> SushiSystem:
    """Candidate SubNets (the table's), their layouts and vectorised costs on ``profile``.

    Args:
        cache_bytes: on-chip bytes for the cached SubGraph (default: the profile's weight buffer).
        compute_ms: measured compute latency per SubNet (ms, batch 1) instead of the profile's MAC-array
            equation (:class:`~ws_sushi.accel.SushiAccel`), e.g. from ws-core's per-block latency table.

    Raises:
        ValueError: a candidate outside the SuperNet, or a cache larger than the whole SuperNet.
    """
    accel = SushiAccel(profile, bits, compute_ms=compute_ms)
    table = table.bind(net)
    supernet_bytes = supernet_subgraph(net).nbytes(accel.bits)
    capacity = accel.profile.weight_buffer_bytes if cache_bytes is None else cache_bytes
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
        raise ValueError(f"cache_bytes must be an int >= 0, got {capacity!r}")
    if capacity > supernet_bytes:
        raise ValueError(
            f"the cache ({capacity} bytes) is larger than the whole SuperNet ({supernet_bytes} bytes at "
            f"{accel.bits}-bit weights): every SubNet would stay on chip and there is no SubGraph to choose; "
            f"use a cache of at most {supernet_bytes} bytes (--cache-bytes) or a larger SuperNet"
        )
    positions: dict[tuple, dict[str, int]] = {}
    layouts = []
    for cfg in table.configs:
        hw = input_hw(net, cfg, input_size)
        if hw not in positions:
            positions[hw] = output_positions(net, hw)
        layouts.append(subnet_layout(net, cfg, input_size, positions[hw]))
    costs = accel.candidates(layouts)
    accuracy = np.array([table.accuracy(lay.config) for lay in layouts], dtype=np.float64)
    name = (getattr(net, "pretrained_cfg", None) or {}).get("architecture", type(net).__name__)
    return SushiSystem(accel, table, layouts, costs, accuracy, capacity, supernet_bytes, name)


@dataclass
class SimulationResult:
    """Per-query outcome of one simulated stream under one cache policy."""

    policy: str
    subnet: np.ndarray
    arrival_s: np.ndarray
    start_s: np.ndarray
    finish_s: np.ndarray
    service_s: np.ndarray
    latency_target_s: np.ndarray
    accuracy: np.ndarray
    fetch_bytes: np.ndarray
    macs: np.ndarray
    weight_bytes: np.ndarray
    cache_updates: int
    fill_bytes: int
    cached_bytes: np.ndarray
    profile: HardwareProfile
    extra: dict[str, Any] = field(default_factory=dict)
    #: what ``accuracy`` is (:attr:`AccuracyTable.label`): ``"measured"``, ``"predicted"`` or
    #: ``"proxy (log-linear in MACs)"``; ``"unlabelled"`` for a system built without a table.
    accuracy_label: str = "unlabelled"

    @property
    def latency_s(self) -> np.ndarray:
        """End-to-end latency of each query: waiting + service."""
        return self.finish_s - self.arrival_s

    @property
    def met(self) -> np.ndarray:
        return self.latency_s <= self.latency_target_s * (1 + 1e-12)

    @property
    def offchip_bytes(self) -> int:
        """Off-chip weight bytes of all queries plus cache fills."""
        return int(self.fetch_bytes.sum()) + int(self.fill_bytes)

    @property
    def offchip_energy_j(self) -> float:
        return self.offchip_bytes * self.profile.energy_pj_per_offchip_byte * 1e-12

    @property
    def energy_j(self) -> float:
        p = self.profile
        return (float(self.macs.sum()) * p.energy_pj_per_mac + float(self.weight_bytes.sum())
                * p.energy_pj_per_onchip_byte) * 1e-12 + self.offchip_energy_j

    def summary(self) -> dict[str, Any]:
        """Headline numbers (milliseconds, millijoules, megabytes); ``accuracy_label`` says what
        ``served_accuracy`` is (a proxy's is in proxy units, not an accuracy)."""
        lat = self.latency_s * 1e3
        n = len(lat)
        return {
            "queries": n,
            "mean_latency_ms": float(lat.mean()),
            "p50_latency_ms": float(np.percentile(lat, 50)),
            "p99_latency_ms": float(np.percentile(lat, 99)),
            "mean_service_ms": float(self.service_s.mean() * 1e3),
            "slo_attainment": float(self.met.mean()),
            "served_accuracy": float(self.accuracy.mean()),
            "accuracy_label": self.accuracy_label,
            "offchip_mb": self.offchip_bytes / 1e6,
            "offchip_energy_mj": self.offchip_energy_j * 1e3,
            "offchip_energy_per_query_uj": self.offchip_energy_j * 1e6 / n,
            "energy_mj": self.energy_j * 1e3,
            "cache_updates": self.cache_updates,
            "fill_mb": self.fill_bytes / 1e6,
            "mean_cached_kb": float(self.cached_bytes.mean() / 1e3),
        }


def simulate(
    stream: QueryStream,
    system: SushiSystem,
    policy: CachePolicy,
    objective: str = "accuracy",
) -> SimulationResult:
    """Serve ``stream`` on ``system`` with cache ``policy`` (see the module docstring)."""
    _check_objective(objective)
    ctx = system.context(objective)
    costs, accuracy = system.costs, system.accuracy
    bw = system.accel.profile.offchip_bandwidth_bytes_per_s
    bits = system.bits
    cached = policy.initial(ctx)
    if cached.nbytes(bits) > system.capacity_bytes:
        raise ValueError(f"{policy!r}: initial SubGraph of {cached.nbytes(bits)} bytes exceeds the "
                         f"{system.capacity_bytes}-byte weight buffer")
    latency, fetch = costs.evaluate(cached)
    n = len(stream)
    subnet = np.zeros(n, np.int64)
    start = np.zeros(n)
    finish = np.zeros(n)
    service = np.zeros(n)
    fetched = np.zeros(n, np.int64)
    cached_bytes = np.zeros(n, np.int64)
    served: list[int] = []
    targets, floors = stream.latency_target_s, stream.accuracy_target
    t_free, updates, fill = 0.0, 0, 0
    cached_size = cached.nbytes(bits)
    for q in range(n):
        arrival = float(stream.arrival_s[q])
        t0 = max(arrival, t_free)
        budget = float(targets[q]) - (t0 - arrival)
        floor = float(floors[q])
        i = int(select_subnets(accuracy, latency, [budget], [floor], objective)[0])
        start[q], service[q] = t0, latency[i]
        t_free = finish[q] = t0 + latency[i]
        subnet[q], fetched[q], cached_bytes[q] = i, fetch[i], cached_size
        served.append(i)
        new = policy.update(ctx, q, cached, served, targets, floors)
        if new is not None and new != cached:
            size = new.nbytes(bits)
            if size > system.capacity_bytes:
                raise ValueError(f"{policy!r} chose a SubGraph of {size} bytes; the weight buffer holds "
                                 f"{system.capacity_bytes}")
            load = size - new.intersect(cached).nbytes(bits)
            fill += load
            updates += 1
            t_free += load / bw
            cached, cached_size = new, size
            latency, fetch = costs.evaluate(cached)
    return SimulationResult(
        policy.name, subnet, stream.arrival_s.copy(), start, finish, service, stream.latency_target_s.copy(),
        accuracy[subnet], fetched, costs.total_macs[subnet], costs.weight_bytes[subnet], updates, fill,
        cached_bytes, system.accel.profile,
        accuracy_label=system.table.label if system.table is not None else "unlabelled",
    )


def compare_policies(
    stream: QueryStream,
    system: SushiSystem,
    policies: Sequence[CachePolicy],
    objective: str = "accuracy",
) -> dict[str, SimulationResult]:
    """:func:`simulate` the same stream under each policy; results keyed by policy name."""
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ValueError(f"compare_policies: policy names must be distinct, got {names}")
    return {p.name: simulate(stream, system, p, objective) for p in policies}


def format_summary(results: Mapping[str, SimulationResult], baseline: str = "no-cache") -> str:
    """A plain-text table of :meth:`SimulationResult.summary` per policy, with changes relative to ``baseline``;
    a last line says what the accuracy column is (``accuracy: proxy (log-linear in MACs)`` for a proxy table)."""
    rows = {name: r.summary() for name, r in results.items()}
    base = rows.get(baseline)
    labels = sorted({s["accuracy_label"] for s in rows.values()})
    acc = "proxy acc" if any(label.startswith("proxy") for label in labels) else "accuracy"
    header = (f"{'policy':<10} {'mean ms':>9} {'p99 ms':>9} {'SLO met':>8} {acc:>9} "
              f"{'off-chip mJ':>12} {'change vs ' + baseline:>30} {'updates':>8}")
    lines = [header, "-" * len(header)]
    for name, s in rows.items():
        rel = ""
        if base is not None and name != baseline:
            dl = s["mean_latency_ms"] / base["mean_latency_ms"] - 1
            de = s["offchip_energy_mj"] / base["offchip_energy_mj"] - 1 if base["offchip_energy_mj"] else math.nan
            rel = f"latency {dl:+.1%} energy {de:+.1%}"
        lines.append(f"{name:<10} {s['mean_latency_ms']:>9.3f} {s['p99_latency_ms']:>9.3f} {s['slo_attainment']:>8.3f} "
                     f"{s['served_accuracy']:>9.4f} {s['offchip_energy_mj']:>12.3f} {rel:>30} {s['cache_updates']:>8}")
    lines.append(f"{acc}: {', '.join(labels)}")
    return "\n".join(lines)

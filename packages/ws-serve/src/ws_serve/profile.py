"""The SuperNet profiler (SuperServe §5): the served set and its latency/accuracy profile.

* :class:`ServedSet` — the SubNets a deployment serves, each with its accuracy and MACs, sorted by
  accuracy. :func:`pareto_served_set` picks it by default: ws-core's :func:`~ws_core.search.pareto_front`
  of (MACs, accuracy) over a candidate pool (every uniform-choice SubNet, random samples and, when
  asked, ws-core's :func:`~ws_core.search.evolutionary_search` at spread-out MACs budgets), thinned to
  ``n`` SubNets evenly spread in MACs.
* :class:`Profile` — what the scheduling policies read: per served SubNet its accuracy and its
  latency at every batch size ``1..B_max``. :func:`profile_served` measures it with
  :func:`ws_core.cost.profile_latency` (the SubNetAct path, on the serving device; the minimum over
  ``rounds`` of per-round medians), reports progress through a ``progress`` callback, and caches the
  table as JSON next to the checkpoint (:func:`latency_cache_path`).
* Trust check: latency at the largest batch should grow with MACs over the served set.
  :func:`latency_inversions` lists the pairs where it does not; :func:`profile_served` re-measures
  the SubNets involved once, and if inversions remain, warns and records them in the profile
  (``monotone_in_macs: false``, ``inversions: [[id_a, id_b], ...]``).
* :func:`predict_served_profile` — for served sets too large to profile SubNet by SubNet: each distinct
  block timed once (ws-core's per-block latency table, cached next to the checkpoint:
  :func:`block_table_path`), SubNet latency = the sum of its blocks × a per-batch factor fitted on a few
  anchor SubNets measured whole; the profile's note says it is predicted and how well it predicted the
  anchors (leave-one-out).
* :func:`superserve_paper_profile` — a synthetic profile modelled on the numbers of the SuperServe
  paper, for simulating at the paper's scale on any machine.

Without a trained SuperNet's accuracies an explicit proxy is used and recorded
(``accuracy_source="proxy:relative-macs"``: MACs divided by the largest SubNet's MACs).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import re
import statistics
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ws_core.config import SubNetConfig
from ws_core.cost import CostModel, LatencyTable, profile_latency
from ws_core.io import atomic_write_json
from ws_core.latency import BlockLatencyTable, device_key
from ws_core.search import evolutionary_search, pareto_front
from ws_core.supernet import SuperNet

__all__ = [
    "PROXY_ACCURACY",
    "Profile",
    "ServedSet",
    "ServedSubNet",
    "anchor_indices",
    "block_table_path",
    "latency_cache_path",
    "latency_inversions",
    "pareto_served_set",
    "predict_served_profile",
    "profile_served",
    "superserve_paper_profile",
]

PROXY_ACCURACY = "proxy:relative-macs"


@dataclass(frozen=True)
class ServedSubNet:
    """One served SubNet: its config, (profiled or proxy) accuracy and MACs per sample."""

    config: SubNetConfig
    accuracy: float
    macs: int = 0

    @property
    def id(self) -> str:
        return self.config.id

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "config": self.config.to_dict(), "accuracy": self.accuracy, "macs": self.macs}


@dataclass(frozen=True)
class ServedSet:
    """The served SubNets, sorted by accuracy (then MACs); JSON round-trippable."""

    subnets: tuple[ServedSubNet, ...]
    accuracy_source: str = "given"

    def __post_init__(self) -> None:
        if not self.subnets:
            raise ValueError("ServedSet: needs at least one SubNet")
        ordered = tuple(sorted(self.subnets, key=lambda s: (s.accuracy, s.macs)))
        ids = [s.id for s in ordered]
        if len(set(ids)) != len(ids):
            raise ValueError(f"ServedSet: SubNets must be distinct, got ids {ids}")
        for s in ordered:
            if not math.isfinite(s.accuracy):
                raise ValueError(f"ServedSet: accuracy of SubNet {s.id} must be finite, got {s.accuracy}")
        object.__setattr__(self, "subnets", ordered)

    @classmethod
    def from_accuracies(
        cls, net: SuperNet, configs: Sequence[Mapping[str, Any]], accuracies: Sequence[float] | None = None,
        source: str = "given",
    ) -> ServedSet:
        """Served set of ``configs`` with measured ``accuracies`` (``None``: the MACs proxy)."""
        costs = CostModel(net)
        canonical = [net.space.validate(c) for c in configs]
        macs = [costs.macs(c) for c in canonical]
        if accuracies is None:
            top = max(macs)
            accuracies, source = [m / top for m in macs], PROXY_ACCURACY
        if len(accuracies) != len(canonical):
            raise ValueError(f"ServedSet: {len(canonical)} configs but {len(accuracies)} accuracies")
        return cls(tuple(ServedSubNet(c, float(a), int(m)) for c, a, m in zip(canonical, accuracies, macs)), source)

    def __len__(self) -> int:
        return len(self.subnets)

    def __iter__(self):
        return iter(self.subnets)

    @property
    def configs(self) -> list[SubNetConfig]:
        return [s.config for s in self.subnets]

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.subnets]

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy_source": self.accuracy_source, "subnets": [s.to_dict() for s in self.subnets]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ServedSet:
        subnets = []
        for i, s in enumerate(d.get("subnets", [])):
            try:
                subnets.append(ServedSubNet(SubNetConfig(s["config"]), float(s["accuracy"]), int(s.get("macs", 0))))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"ServedSet: entry {i} needs 'config' and 'accuracy' ({e})") from None
        return cls(tuple(subnets), str(d.get("accuracy_source", "given")))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ServedSet:
        with open(path) as f:
            return cls.from_dict(json.load(f))



def _uniform_configs(net: SuperNet) -> list[SubNetConfig]:
    """Every SubNet that uses one choice per dimension everywhere (spans the cost range)."""
    space = net.space
    out = []
    for combo in itertools.product(*(d.choices for d in space.dimensions)):
        cfg: dict[str, Any] = {}
        for d, c in zip(space.dimensions, combo):
            if d.level == "net":
                cfg[d.name] = c
            else:
                n = len(space.stage_blocks) if d.level == "stage" else sum(space.stage_blocks)
                cfg[d.name] = [c] * n
        if space.is_valid(cfg):
            out.append(space.validate(cfg))
    return out


def _spread(costs: Sequence[float], n: int) -> list[int]:
    """Indices (into ``costs``, sorted ascending) of ``n`` points closest to evenly spaced targets."""
    if len(costs) <= n:
        return list(range(len(costs)))
    lo, hi = costs[0], costs[-1]
    chosen: list[int] = []
    for k in range(n):
        target = lo + (hi - lo) * k / (n - 1)
        free = [i for i in range(len(costs)) if i not in chosen]
        chosen.append(min(free, key=lambda i: (abs(costs[i] - target), i)))
    return sorted(chosen)


def pareto_served_set(
    net: SuperNet,
    n: int = 6,
    accuracy: Callable[[SubNetConfig], float] | None = None,
    *,
    pool: int = 200,
    search_generations: int = 0,
    generator: torch.Generator | None = None,
) -> ServedSet:
    """A served set of ``n`` Pareto-optimal SubNets (MACs vs accuracy), evenly spread in MACs.

    Args:
        net: the SuperNet.
        n: number of SubNets to serve (>= 1).
        accuracy: accuracy of a SubNet, e.g. ``lambda c: predictor.predict([c]).item()`` with a ws-core
            :class:`~ws_core.search.AccuracyPredictor`, or a measurement on a validation loader.
            ``None``: the relative-MACs proxy (recorded in ``accuracy_source``).
        pool: random SubNets added to the uniform-choice candidates.
        search_generations: if > 0, also run ws-core's evolutionary search for ``n`` MACs budgets
            (quantiles of the pool) with this many generations and add the winners.
        generator: source of randomness (seed it for a reproducible served set).
    """
    if n < 1:
        raise ValueError(f"pareto_served_set: n must be >= 1, got {n}")
    if pool < 0 or search_generations < 0:
        raise ValueError(f"pareto_served_set: pool and search_generations must be >= 0, got {pool}, "
                         f"{search_generations}")
    space, costs = net.space, CostModel(net)
    candidates = list(dict.fromkeys([space.min(), space.max(), *_uniform_configs(net),
                                     *(space.sample(generator) for _ in range(pool))]))
    macs_cache: dict[SubNetConfig, int] = {}

    def macs(cfg: SubNetConfig) -> float:
        if cfg not in macs_cache:
            macs_cache[cfg] = costs.macs(cfg)
        return float(macs_cache[cfg])

    top = max(macs(c) for c in candidates)
    score: Callable[[SubNetConfig], float] = accuracy if accuracy is not None else (lambda c: macs(c) / top)
    if search_generations:
        budgets = sorted(macs(c) for c in candidates)
        for k in range(1, n + 1):
            budget = budgets[min(len(budgets) - 1, round(k / n * (len(budgets) - 1)))]
            found = evolutionary_search(space, score, macs, budget, population_size=16,
                                        generations=search_generations, generator=generator)
            candidates.append(found.best)
        candidates = list(dict.fromkeys(candidates))
    scores = [float(score(c)) for c in candidates]
    front = pareto_front([macs(c) for c in candidates], scores)  # sorted by MACs
    picked = [front[i] for i in _spread([macs(candidates[j]) for j in front], n)]
    source = "given" if accuracy is not None else PROXY_ACCURACY
    return ServedSet(tuple(ServedSubNet(candidates[i], scores[i], int(macs(candidates[i]))) for i in picked), source)


@dataclass(frozen=True)
class Profile:
    """Accuracy and batch latency of each served SubNet: what the scheduling policies read.

    Args:
        subnet_ids: served SubNet ids, sorted by accuracy ascending (index ``s`` below).
        accuracies: ``accuracies[s]`` (e.g. top-1 in %, or the proxy).
        latency_ms: ``latency_ms[s][b - 1]``: latency of a batch of ``b`` queries, ``b = 1..B_max``.
        device: where it was measured.
        note: provenance (e.g. "measured", "synthetic: ...").
        monotone_in_macs: whether latency at the largest batch grew with MACs when measured (``None``:
            not checked, e.g. a synthetic profile or a file written before the check existed).
        inversions: the (lower-MACs SubNet, higher-MACs SubNet) id pairs where it did not.
    """

    subnet_ids: tuple[str, ...]
    accuracies: tuple[float, ...]
    latency_ms: tuple[tuple[float, ...], ...]
    device: str = "unknown"
    note: str = ""
    monotone_in_macs: bool | None = None
    inversions: tuple[tuple[str, str], ...] = ()
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids, acc = tuple(self.subnet_ids), tuple(float(a) for a in self.accuracies)
        lat = tuple(tuple(float(v) for v in row) for row in self.latency_ms)
        if not ids:
            raise ValueError("Profile: needs at least one SubNet")
        if len(set(ids)) != len(ids):
            raise ValueError(f"Profile: SubNet ids must be distinct, got {list(ids)}")
        if not len(acc) == len(lat) == len(ids):
            raise ValueError(f"Profile: {len(ids)} ids, {len(acc)} accuracies and {len(lat)} latency rows")
        widths = {len(row) for row in lat}
        if len(widths) != 1 or 0 in widths:
            raise ValueError(f"Profile: every SubNet needs latencies for batch 1..B_max, got row lengths {widths}")
        for s, row in enumerate(lat):
            if not all(math.isfinite(v) and v > 0 for v in row):
                raise ValueError(f"Profile: latencies must be finite and > 0, SubNet {ids[s]} has {list(row)}")
        if any(a2 < a1 for a1, a2 in zip(acc, acc[1:])):
            raise ValueError(f"Profile: SubNets must be sorted by accuracy ascending, got {list(acc)}")
        object.__setattr__(self, "subnet_ids", ids)
        object.__setattr__(self, "accuracies", acc)
        object.__setattr__(self, "latency_ms", lat)
        object.__setattr__(self, "inversions", tuple((str(a), str(b)) for a, b in self.inversions))
        self._index.update({sid: i for i, sid in enumerate(ids)})

    @property
    def max_batch(self) -> int:
        return len(self.latency_ms[0])

    @property
    def num_subnets(self) -> int:
        return len(self.subnet_ids)

    def latency(self, subnet: int, batch_size: int) -> float:
        """Latency (ms) of ``subnet`` (index) at ``batch_size`` (1..B_max)."""
        return self.latency_ms[subnet][batch_size - 1]

    def index(self, subnet_id: str) -> int:
        try:
            return self._index[subnet_id]
        except KeyError:
            raise KeyError(f"Profile: no SubNet {subnet_id!r}; profiled: {list(self.subnet_ids)}") from None

    def monotone(self) -> Profile:
        """The profile with latency made non-decreasing in batch size (property P1), as a running max."""
        rows = tuple(tuple(itertools.accumulate(row, max)) for row in self.latency_ms)
        return self._with_rows(rows)

    def restrict(self, max_batch: int) -> Profile:
        if not 1 <= max_batch <= self.max_batch:
            raise ValueError(f"Profile.restrict: max_batch must be in [1, {self.max_batch}], got {max_batch}")
        return self._with_rows(tuple(r[:max_batch] for r in self.latency_ms))

    def _with_rows(self, rows: tuple[tuple[float, ...], ...]) -> Profile:
        return Profile(self.subnet_ids, self.accuracies, rows, self.device, self.note, self.monotone_in_macs,
                       self.inversions)

    def with_macs_check(self, monotone_in_macs: bool | None, inversions: Iterable[tuple[str, str]] = ()) -> Profile:
        """This profile with the result of the latency-vs-MACs check recorded."""
        return Profile(self.subnet_ids, self.accuracies, self.latency_ms, self.device, self.note,
                       monotone_in_macs, tuple(inversions))

    @classmethod
    def from_table(cls, table: LatencyTable, served: ServedSet, monotone: bool = True) -> Profile:
        """Profile of ``served`` from a ws-core latency table (must cover batch 1..B for every SubNet)."""
        by_key = {(e.subnet_id, e.batch_size): e.median_ms for e in table.entries}
        batches = sorted({e.batch_size for e in table.entries})
        max_batch = len(batches)
        if batches != list(range(1, max_batch + 1)):
            raise ValueError(f"Profile.from_table: batch sizes must be 1..B, got {batches}")
        rows = []
        for s in served:
            missing = [b for b in batches if (s.id, b) not in by_key]
            if missing:
                raise ValueError(f"Profile.from_table: SubNet {s.id} not measured at batch sizes {missing}")
            rows.append(tuple(by_key[(s.id, b)] for b in batches))
        out = cls(tuple(served.ids), tuple(s.accuracy for s in served), tuple(rows),
                  f"{table.device} ({table.device_name}, {table.threads} threads)",
                  f"measured with ws_core.cost.profile_latency ({table.mode}); accuracy: {served.accuracy_source}")
        return out.monotone() if monotone else out

    def to_dict(self) -> dict[str, Any]:
        return {"subnet_ids": list(self.subnet_ids), "accuracies": list(self.accuracies),
                "latency_ms": [list(r) for r in self.latency_ms], "device": self.device, "note": self.note,
                "monotone_in_macs": self.monotone_in_macs, "inversions": [list(p) for p in self.inversions]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Profile:
        """Inverse of :meth:`to_dict`; fields added later (``monotone_in_macs``, ``inversions``) default."""
        try:
            monotone = d.get("monotone_in_macs")
            inversions = d.get("inversions") or ()
            if monotone not in (None, True, False):
                raise ValueError(f"Profile: monotone_in_macs must be true, false or null, got {monotone!r}")
            if any(len(pair) != 2 for pair in inversions):
                raise ValueError(f"Profile: inversions must be [id_a, id_b] pairs, got {inversions!r}")
            return cls(tuple(d["subnet_ids"]), tuple(d["accuracies"]), tuple(tuple(r) for r in d["latency_ms"]),
                       str(d.get("device", "unknown")), str(d.get("note", "")), monotone,
                       tuple((a, b) for a, b in inversions))
        except KeyError as e:
            raise ValueError(f"Profile: missing field {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Profile:
        with open(path) as f:
            return cls.from_dict(json.load(f))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def latency_cache_path(checkpoint: str | os.PathLike, device: torch.device | str = "cpu",
                       backend: str = "eager") -> Path:
    """``<checkpoint>.latency-<device>[-<backend>].json``: where the latency table of a checkpoint,
    measured with an execution backend (no suffix: the eager SuperNet), is cached."""
    device = torch.device(device)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{device.type}-{_device_name(device)}").strip("-").lower()
    suffix = "" if backend in ("eager", "active") else "-" + re.sub(r"[^A-Za-z0-9]+", "-", backend).lower()
    return Path(f"{os.fspath(checkpoint)}.latency-{slug}{suffix}.json")


def block_table_path(checkpoint: str | os.PathLike) -> Path:
    """``<checkpoint>.blocks.json``: the per-block latency tables of a checkpoint's SubNets, one per device
    inside the file (:class:`ws_core.latency.BlockLatencyTable`), used by :func:`predict_served_profile`."""
    return Path(f"{os.fspath(checkpoint)}.blocks.json")


def _table_covers(table: LatencyTable, ids: Iterable[str], batches: Iterable[int], device: torch.device,
                  rounds: int = 1, mode: str = "active") -> bool:
    have = {(e.subnet_id, e.batch_size): e.rounds for e in table.entries}
    return (table.device_name == _device_name(device) and table.threads == torch.get_num_threads()
            and table.mode == mode and all(have.get((i, b), 0) >= rounds for i in ids for b in batches))


def latency_inversions(
    ids: Sequence[str], macs: Sequence[float], latency_ms: Sequence[float], rtol: float = 0.0
) -> list[tuple[str, str]]:
    """Pairs ``(a, b)`` with ``macs[a] < macs[b]`` but ``latency[a] > latency[b] * (1 + rtol)``.

    Pure function; ``ids``, ``macs`` and ``latency_ms`` are parallel (one entry per SubNet, e.g. the
    latency at the largest batch). Pairs come in the order of ``ids``.
    """
    if not len(ids) == len(macs) == len(latency_ms):
        raise ValueError(f"latency_inversions: {len(ids)} ids, {len(macs)} MACs and {len(latency_ms)} latencies")
    if rtol < 0:
        raise ValueError(f"latency_inversions: rtol must be >= 0, got {rtol}")
    n = range(len(ids))
    return [(ids[a], ids[b]) for a in n for b in n
            if macs[a] < macs[b] and latency_ms[a] > latency_ms[b] * (1 + rtol)]


def _merge_min(table: LatencyTable, again: LatencyTable) -> LatencyTable:
    """``table`` with every entry measured again replaced by the faster of the two medians."""
    new = {(e.subnet_id, e.batch_size): e for e in again.entries}
    entries = []
    for e in table.entries:
        o = new.get((e.subnet_id, e.batch_size))
        if o is not None:
            faster = o if o.median_ms < e.median_ms else e
            e = replace(e, median_ms=faster.median_ms, p90_ms=faster.p90_ms, rounds=e.rounds + o.rounds)
        entries.append(e)
    return LatencyTable(table.device, table.device_name, table.mode, table.torch_version, table.threads, entries)


def _macs_check(table: LatencyTable, served: ServedSet, max_batch: int, rtol: float) -> list[tuple[str, str]] | None:
    """Inversions of latency at ``max_batch`` vs MACs over ``served`` (``None`` if some MACs are unknown)."""
    if any(s.macs <= 0 for s in served):
        return None
    by_key = {(e.subnet_id, e.batch_size): e.median_ms for e in table.entries}
    return latency_inversions(served.ids, [s.macs for s in served], [by_key[(i, max_batch)] for i in served.ids],
                              rtol)


Measure = Callable[[list[SubNetConfig], list[int]], LatencyTable]


def _measure_with(net: SuperNet, device: torch.device, warmup: int, repeats: int, rounds: int,
                  progress: Callable[[str], None] | None, backend: Any,
                  sample_shape: Sequence[int] | None) -> tuple[Measure, str]:
    """``measure(configs, batch_sizes)`` timing whole SubNets the way ``backend`` serves them (``None`` or the
    eager backend: the SuperNet with SubNetAct, in place), and the table's mode."""
    mode = "active" if backend is None or backend.name == "eager" else backend.timing_key
    forward = None
    if mode != "active":
        shape = tuple(int(v) for v in (sample_shape or (net.pretrained_cfg or {})["input_size"]))
        inputs: dict[int, torch.Tensor] = {}

        def forward(batch_size: int, cfg: SubNetConfig) -> None:
            x = inputs.get(batch_size)
            if x is None:
                x = inputs[batch_size] = torch.randn(batch_size, *shape, device=device)
            backend(x, cfg.id)

    def measure(configs: list[SubNetConfig], batch_sizes: list[int]) -> LatencyTable:
        return profile_latency(net, configs, batch_sizes=batch_sizes, device=device, warmup=warmup,
                               repeats=repeats, mode=mode, rounds=rounds, progress=progress, forward=forward)

    return measure, mode


def profile_served(
    net: SuperNet,
    served: ServedSet,
    max_batch: int = 16,
    *,
    cache: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    warmup: int = 3,
    repeats: int = 10,
    rounds: int = 3,
    inversion_rtol: float = 0.02,
    progress: Callable[[str], None] | None = None,
    measure: Measure | None = None,
    backend: Any = None,
    sample_shape: Sequence[int] | None = None,
) -> Profile:
    """Measure (or reuse) the latency of every served SubNet at batch sizes ``1..max_batch``.

    ``net`` should have SubNetAct inserted so the served path is what gets timed. Each latency is the
    minimum over ``rounds`` rounds of the median of ``repeats`` timed forwards
    (:func:`ws_core.cost.profile_latency`). With ``cache``, a table measured earlier on the same device
    name and thread count, with at least ``rounds`` rounds, covering every (SubNet, batch) is reused;
    otherwise the new table is written there (atomically).

    Trust check: if latency at ``max_batch`` is not monotone in MACs over the served set (a pair whose
    lower-MACs SubNet is slower by more than ``inversion_rtol``), the SubNets involved are measured once
    more (keeping the lower median per entry); inversions that remain are warned about
    (``RuntimeWarning``) and recorded in the profile (``monotone_in_macs``, ``inversions``).

    Args:
        progress: called with one line per step (e.g. ``print``), so start-up is not silent.
        measure: ``measure(configs, batch_sizes) -> LatencyTable``; default
            :func:`ws_core.cost.profile_latency` with the arguments above (injectable for tests).
        backend: a prepared :class:`~ws_serve.backends.Backend` whose forwards are timed instead of the
            SuperNet's (the profile then describes what that backend serves; ``None`` or the eager
            backend: the SuperNet with SubNetAct, in place), on inputs ``[b, *sample_shape]``
            (default: the model's ``input_size``).
    """
    if max_batch < 1:
        raise ValueError(f"profile_served: max_batch must be >= 1, got {max_batch}")
    if rounds < 1:
        raise ValueError(f"profile_served: rounds must be >= 1, got {rounds}")
    device = torch.device(device) if device is not None else next(net.parameters()).device
    batches = list(range(1, max_batch + 1))
    say = progress if progress is not None else (lambda _msg: None)
    default_measure, mode = _measure_with(net, device, warmup, repeats, rounds, progress, backend, sample_shape)
    measure = measure or default_measure
    table = None
    if cache is not None and Path(cache).is_file():
        try:
            cached = LatencyTable.load(cache)
        except (ValueError, TypeError, KeyError, json.JSONDecodeError):
            cached = None  # unreadable cache: measure again and overwrite it
        if cached is not None and _table_covers(cached, served.ids, batches, device, rounds, mode):
            table = cached
            say(f"latency profile: reusing {cache}")
    if table is None:
        say(f"latency profile: {len(served)} SubNets x batch 1..{max_batch} on {device} "
            f"({'SuperNet, in place' if mode == 'active' else mode + ' backend'}), {rounds} round(s) of "
            f"{repeats} timed forwards each")
        table = measure(served.configs, batches)
        inversions = _macs_check(table, served, max_batch, inversion_rtol)
        if inversions:
            again = [s.config for s in served if any(s.id in pair for pair in inversions)]
            say(f"latency profile: latency at batch {max_batch} is not monotone in MACs ({len(inversions)} "
                f"pair(s)); re-measuring {len(again)} SubNet(s) once")
            table = _merge_min(table, measure(again, batches))
        if cache is not None:
            table.save(cache)
    keep = set(served.ids)
    table = LatencyTable(table.device, table.device_name, table.mode, table.torch_version, table.threads,
                         [e for e in table.entries if e.subnet_id in keep and e.batch_size <= max_batch])
    inversions = _macs_check(table, served, max_batch, inversion_rtol)
    profile = Profile.from_table(table, served)
    if inversions:
        warnings.warn(f"profile_served: on {profile.device}, latency at batch {max_batch} is not monotone in MACs "
                      f"(a SubNet with fewer MACs is slower) for {len(inversions)} pair(s): {inversions}; "
                      f"the policies use the measured latencies as they are", RuntimeWarning, stacklevel=2)
    return profile.with_macs_check(None if inversions is None else not inversions, inversions or ())


def anchor_indices(macs: Sequence[float], anchors: int) -> list[int]:
    """Indices of ``anchors`` SubNets spread evenly over the MACs order (the cheapest and the largest first
    among them), at most one per SubNet. Pure function."""
    if anchors < 0:
        raise ValueError(f"anchors must be >= 0, got {anchors}")
    order = sorted(range(len(macs)), key=lambda i: (macs[i], i))
    k = min(anchors, len(order))
    if k == 0:
        return []
    if k == 1:
        return [order[-1]]
    return sorted({order[round(j * (len(order) - 1) / (k - 1))] for j in range(k)})


def predict_served_profile(
    net: SuperNet,
    served: ServedSet,
    max_batch: int = 16,
    *,
    table: BlockLatencyTable | None = None,
    cache: str | os.PathLike | None = None,
    anchors: int = 3,
    device: torch.device | str | None = None,
    warmup: int = 3,
    repeats: int = 10,
    rounds: int = 3,
    progress: Callable[[str], None] | None = None,
    measure: Measure | None = None,
    backend: Any = None,
    sample_shape: Sequence[int] | None = None,
) -> Profile:
    """The latency of every served SubNet **predicted** from per-block latencies, for served sets too large
    to profile SubNet by SubNet (hundreds of SubNets × ``max_batch`` batch sizes).

    1. Every distinct block of the served SubNets is timed once per batch size ``1..max_batch`` on
       ``device`` (:class:`ws_core.latency.BlockLatencyTable`; blocks already in ``table`` or in the
       table stored in ``cache`` for this device are not timed again, and the grown table is saved
       there).
    2. A SubNet's latency at batch ``b`` is the sum of its blocks' entries times a per-batch factor
       ``scale[b]``: the median, over ``anchors`` SubNets spread over the MACs range (measured whole, the
       way ``backend`` serves them, as :func:`profile_served` does), of measured ÷ summed latency. The
       factor carries what lies between blocks and the serving backend's speed; the anchors themselves
       keep their measured latencies.

    The profile's ``note`` says it is predicted, and with two anchors or more gives the leave-one-out
    error of the prediction on the anchors (each predicted with the factor of the others).
    ``anchors=0`` uses the bare sums (which leave out the time between blocks: too low).
    Arguments as :func:`profile_served`.
    """
    if max_batch < 1:
        raise ValueError(f"predict_served_profile: max_batch must be >= 1, got {max_batch}")
    if rounds < 1:
        raise ValueError(f"predict_served_profile: rounds must be >= 1, got {rounds}")
    device = torch.device(device) if device is not None else next(net.parameters()).device
    batches = list(range(1, max_batch + 1))
    say = progress if progress is not None else (lambda _msg: None)
    key = device_key(device)
    if table is None:
        table = BlockLatencyTable.load(cache, key) if cache is not None and Path(cache).is_file() \
            else BlockLatencyTable(key)
    elif table.device != key:
        raise ValueError(f"predict_served_profile: the block table is for {table.device}, the device is {key}")
    say(f"latency prediction: timing the blocks of {len(served)} SubNets not yet in the table "
        f"(batch 1..{max_batch}, {table.device})")
    added = table.measure(net, served.configs, batches, device=device, warmup=warmup, repeats=repeats,
                          rounds=rounds, progress=progress)
    if cache is not None and added:
        table.save(cache)
    summed = [[table.predict(net, cfg, b) for b in batches] for cfg in served.configs]
    picked = anchor_indices([s.macs for s in served], anchors)
    measured: dict[int, list[float]] = {}
    if picked:
        default_measure, _ = _measure_with(net, device, warmup, repeats, rounds, progress, backend, sample_shape)
        say(f"latency prediction: measuring {len(picked)} anchor SubNet(s) whole")
        anchor_table = (measure or default_measure)([served.configs[i] for i in picked], batches)
        by_key = {(e.subnet_id, e.batch_size): e.median_ms for e in anchor_table.entries}
        measured = {i: [by_key[(served.ids[i], b)] for b in batches] for i in picked}

    def scale(among: Iterable[int]) -> list[float]:
        among = list(among)
        if not among:
            return [1.0] * len(batches)
        return [statistics.median(measured[i][j] / summed[i][j] for i in among) for j in range(len(batches))]

    factor = scale(picked)
    rows = tuple(tuple(measured[i]) if i in measured else tuple(v * f for v, f in zip(summed[i], factor))
                 for i in range(len(served)))
    if len(picked) >= 2:
        errors = [abs(summed[i][j] * scale(a for a in picked if a != i)[j] - measured[i][j]) / measured[i][j]
                  for i in picked for j in range(len(batches))]
        check = f"leave-one-out error on the anchors: mean {100 * statistics.fmean(errors):.1f} %, " \
                f"max {100 * max(errors):.1f} %"
    else:
        check = "no leave-one-out check (fewer than 2 anchors)"
    how = (f"{len(picked)} anchor SubNet(s) measured whole, scale at batch 1 {factor[0]:.2f}" if picked
           else "no anchors: bare block sums, which leave out the time between blocks")
    note = (f"predicted from per-block latencies (ws_core.latency.BlockLatencyTable, {len(table)} blocks) "
            f"times a per-batch factor; {how}; {check}; accuracy: {served.accuracy_source}")
    out = Profile(tuple(served.ids), tuple(s.accuracy for s in served), rows,
                  f"{device} ({_device_name(device)}, {torch.get_num_threads()} threads)", note)
    return out.monotone()


def superserve_paper_profile(num_subnets: int = 24, max_batch: int = 16) -> Profile:
    """Synthetic profile modelled on SuperServe's OFA-ResNet-50 numbers (RTX 2080 Ti, batch <= 16).

    Pareto accuracies from 73.82% to 80.16% top-1 (evenly spaced); batch latency is affine,
    ``L_s(b) = alpha_s + beta_s * b``, with ``alpha``/``beta`` interpolated geometrically between the
    smallest SubNet (1.5 ms + 0.575 ms/query: 10.7 ms at batch 16, ~1,500 queries/s per GPU) and the
    largest (6.3 ms + 2.107 ms/query: 40 ms at 16, 400 queries/s per GPU). This honours the paper's
    property P3 — the largest SubNet at batch 2 (10.5 ms) costs about what the smallest costs at 16
    (10.7 ms) — and puts the median SubNet (~77%) near 900 queries/s per GPU, so 8 workers sustain
    the paper's 7,000 queries/s bursty load at 76–78% accuracy, as reported. These are not
    measurements; they are a stand-in for the paper's (unpublished) profile.
    """
    if num_subnets < 2 or max_batch < 1:
        raise ValueError(f"superserve_paper_profile: need num_subnets >= 2 and max_batch >= 1, "
                         f"got {num_subnets}, {max_batch}")
    acc_lo, acc_hi = 73.82, 80.16
    a_lo, b_lo, a_hi, b_hi = 1.5, 0.575, 6.29, 2.107
    ids, accs, rows = [], [], []
    for i in range(num_subnets):
        t = i / (num_subnets - 1)
        alpha, beta = a_lo * (a_hi / a_lo) ** t, b_lo * (b_hi / b_lo) ** t
        ids.append(f"paper-{i:02d}")
        accs.append(round(acc_lo + (acc_hi - acc_lo) * t, 3))
        rows.append(tuple(alpha + beta * b for b in range(1, max_batch + 1)))
    return Profile(tuple(ids), tuple(accs), tuple(rows), "RTX 2080 Ti (synthetic)",
                   "synthetic: modelled on SuperServe's published OFA-ResNet-50 numbers")

"""Query streams: arrivals with latency (and optional accuracy) targets that vary over time.

A :class:`QueryStream` holds, per query, its arrival time, its latency target and an optional
accuracy floor. Streams are generated from phases (:func:`generate_stream`; each phase has a rate,
a burstiness and a target range, so rates and targets change over time) or read from trace files
(:func:`read_trace`), the plain CSV/JSON files other tools (e.g. a serving system's trace replay)
exchange — nothing is imported from them.

Trace files (CSV with a header, or JSON: a list of objects or ``{"queries": [...]}``)::

    arrival_s,latency_target_ms,accuracy_target
    0.0000,3.0,
    0.0041,3.0,0.75

Accepted column names: arrival ``arrival_s`` | ``timestamp_s`` | ``time_s`` | ``t``; latency target
``latency_target_ms`` | ``slo_ms`` | ``deadline_ms`` (milliseconds) or ``latency_target_s`` |
``slo_s`` (seconds); accuracy floor ``accuracy_target`` | ``min_accuracy`` (optional, empty = none).

Example::

    >>> stream = generate_stream([Phase(duration_s=1.0, rate_qps=100, latency_target_ms=3.0),
    ...                           Phase(duration_s=1.0, rate_qps=300, latency_target_ms=(1.5, 2.5))], seed=0)
    >>> len(stream) > 300
    True
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ws_core.io import atomic_path, atomic_write_text

__all__ = ["Phase", "QueryStream", "generate_stream", "load_phases", "read_trace", "reference_phases", "write_trace"]

_ARRIVAL = ("arrival_s", "timestamp_s", "time_s", "t")
_TARGET_MS = ("latency_target_ms", "slo_ms", "deadline_ms")
_TARGET_S = ("latency_target_s", "slo_s")
_ACCURACY = ("accuracy_target", "min_accuracy")


@dataclass(frozen=True, eq=False)
class QueryStream:
    """Queries sorted by arrival: ``arrival_s``, ``latency_target_s`` and ``accuracy_target`` (NaN: none)."""

    arrival_s: np.ndarray
    latency_target_s: np.ndarray
    accuracy_target: np.ndarray

    def __post_init__(self) -> None:
        arrival = np.asarray(self.arrival_s, dtype=np.float64).reshape(-1)
        target = np.asarray(self.latency_target_s, dtype=np.float64).reshape(-1)
        acc = np.asarray(self.accuracy_target, dtype=np.float64).reshape(-1)
        if not (arrival.shape == target.shape == acc.shape):
            raise ValueError(f"QueryStream: arrival_s, latency_target_s and accuracy_target must have equal length, "
                             f"got {arrival.size}, {target.size}, {acc.size}")
        if arrival.size == 0:
            raise ValueError("QueryStream: needs at least one query, got none")
        if not np.isfinite(arrival).all() or (arrival < 0).any():
            raise ValueError("QueryStream: arrival times must be finite and >= 0")
        if not np.isfinite(target).all() or (target <= 0).any():
            bad = target[~(np.isfinite(target) & (target > 0))][:3]
            raise ValueError(f"QueryStream: latency targets must be finite and > 0, got {bad.tolist()}")
        order = np.argsort(arrival, kind="stable")
        object.__setattr__(self, "arrival_s", arrival[order])
        object.__setattr__(self, "latency_target_s", target[order])
        object.__setattr__(self, "accuracy_target", acc[order])

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1] - self.arrival_s[0])

    @classmethod
    def from_queries(cls, arrival_s: Sequence[float], latency_target_s: Sequence[float],
                     accuracy_target: Sequence[float | None] | None = None) -> QueryStream:
        acc = (np.full(len(arrival_s), np.nan) if accuracy_target is None
               else np.array([np.nan if a is None else a for a in accuracy_target], dtype=np.float64))
        return cls(np.asarray(arrival_s, np.float64), np.asarray(latency_target_s, np.float64), acc)


@dataclass(frozen=True)
class Phase:
    """A stretch of a generated stream.

    Attributes:
        duration_s: length of the phase.
        rate_qps: mean arrival rate.
        latency_target_ms: one target, or a ``(low, high)`` range drawn uniformly per query.
        accuracy_target: accuracy floor of every query in the phase (``None``: none).
        cv2: squared coefficient of variation of inter-arrival times (1: Poisson; > 1: bursty Gamma).
    """

    duration_s: float
    rate_qps: float
    latency_target_ms: float | tuple[float, float]
    accuracy_target: float | None = None
    cv2: float = 1.0

    def __post_init__(self) -> None:
        for name in ("duration_s", "rate_qps", "cv2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise ValueError(f"Phase: {name} must be a finite number > 0, got {v!r}")
        t = self.latency_target_ms
        lo, hi = (t, t) if isinstance(t, (int, float)) else tuple(t)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise ValueError(f"Phase: latency_target_ms must be > 0 or a range (low, high) with 0 < low <= high, "
                             f"got {t!r}")
        object.__setattr__(self, "latency_target_ms", float(t) if lo == hi and isinstance(t, (int, float))
                           else (float(lo), float(hi)))


def generate_stream(phases: Sequence[Phase | Mapping[str, Any]], seed: int = 0) -> QueryStream:
    """Queries for consecutive ``phases`` (Gamma inter-arrivals: shape ``1/cv2``, scale ``cv2/rate``)."""
    phases = [p if isinstance(p, Phase) else Phase(**p) for p in phases]
    if not phases:
        raise ValueError("generate_stream: needs at least one phase, got none")
    rng = np.random.default_rng(seed)
    arrivals, targets, accs = [], [], []
    t0 = 0.0
    for p in phases:
        n_max = int(p.rate_qps * p.duration_s * 3 + 50)
        gaps = rng.gamma(1.0 / p.cv2, p.cv2 / p.rate_qps, size=n_max)
        times = t0 + np.cumsum(gaps)
        times = times[times < t0 + p.duration_s]
        if isinstance(p.latency_target_ms, tuple):
            lo, hi = p.latency_target_ms
            tgt = rng.uniform(lo, hi, size=times.size)
        else:
            tgt = np.full(times.size, p.latency_target_ms)
        arrivals.append(times)
        targets.append(tgt / 1e3)
        accs.append(np.full(times.size, np.nan if p.accuracy_target is None else p.accuracy_target))
        t0 += p.duration_s
    return QueryStream(np.concatenate(arrivals), np.concatenate(targets), np.concatenate(accs))


def load_phases(path: str | os.PathLike) -> tuple[list[Phase], int]:
    """Phases (and seed) from a JSON file ``{"phases": [{...Phase fields...}], "seed": 0}``."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, Mapping) or not isinstance(data.get("phases"), list):
        raise ValueError(f"{path}: expected a JSON object with a 'phases' list")
    phases = []
    for i, p in enumerate(data["phases"]):
        if not isinstance(p, Mapping):
            raise ValueError(f"{path}: phase {i} must be an object, got {p!r}")
        p = dict(p)
        if isinstance(p.get("latency_target_ms"), list):
            p["latency_target_ms"] = tuple(p["latency_target_ms"])
        try:
            phases.append(Phase(**p))
        except TypeError as e:
            raise ValueError(f"{path}: phase {i}: {e}; fields are {list(Phase.__dataclass_fields__)}") from None
    return phases, int(data.get("seed", 0))


def _pick(row: Mapping[str, Any], names: Sequence[str]) -> Any:
    for n in names:
        if n in row and row[n] not in (None, ""):
            return row[n]
    return None


def _rows_to_stream(rows: Sequence[Mapping[str, Any]], where: str) -> QueryStream:
    arrival, target, acc = [], [], []
    for i, row in enumerate(rows):
        a = _pick(row, _ARRIVAL)
        ms, s = _pick(row, _TARGET_MS), _pick(row, _TARGET_S)
        if a is None or (ms is None and s is None):
            raise ValueError(f"{where}: query {i} needs an arrival time ({'|'.join(_ARRIVAL)}) and a latency target "
                             f"({'|'.join(_TARGET_MS + _TARGET_S)}); got columns {sorted(row)}")
        try:
            arrival.append(float(a))
            target.append(float(ms) / 1e3 if ms is not None else float(s))
            floor = _pick(row, _ACCURACY)
            acc.append(np.nan if floor is None else float(floor))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: query {i} has a non-numeric field: {dict(row)}") from None
    if not arrival:
        raise ValueError(f"{where}: the trace holds no queries")
    return QueryStream(np.array(arrival), np.array(target), np.array(acc))


def read_trace(path: str | os.PathLike) -> QueryStream:
    """A :class:`QueryStream` from a CSV or JSON trace file (format in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"trace file {str(path)!r} does not exist")
    if path.suffix.lower() == ".json":
        with open(path) as f:
            data = json.load(f)
        rows = data.get("queries") if isinstance(data, Mapping) else data
        if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
            raise ValueError(f"{path}: expected a JSON list of query objects or {{'queries': [...]}}")
        return _rows_to_stream(rows, str(path))
    with open(path, newline="") as f:
        return _rows_to_stream(list(csv.DictReader(f)), str(path))


def write_trace(stream: QueryStream, path: str | os.PathLike) -> None:
    """Write ``stream`` as CSV (or JSON for a ``.json`` path), atomically."""
    path = Path(path)
    rows = [{"arrival_s": float(a), "latency_target_ms": float(t) * 1e3,
             "accuracy_target": None if math.isnan(c) else float(c)}
            for a, t, c in zip(stream.arrival_s, stream.latency_target_s, stream.accuracy_target)]
    if path.suffix.lower() == ".json":
        atomic_write_text(path, json.dumps({"queries": rows}))
    else:
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["arrival_s", "latency_target_ms", "accuracy_target"])
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if v is None else repr(v)) for k, v in r.items()})



def reference_phases(
    latency_range_ms: tuple[float, float],
    accuracy_range: tuple[float, float] | None = None,
    load: float = 0.3,
    phase_s: float = 2.0,
    cycles: int = 1,
) -> list[Phase]:
    """The documented reference stream: five phases relative to the candidates' latency range.

    With ``f``/``s`` the fastest/slowest candidate latency (no cache) and ``m = (f + s) / 2``, the
    rate is ``load / s`` (``2·load / s`` in the burst phase):

    * without ``accuracy_range`` (latency targets vary): targets ``1.3·f``, ``m``, ``1.1·s``,
      uniform ``[1.2·f, 2·f]`` (burst), ``0.8·m``;
    * with ``accuracy_range = (lo, hi)`` (accuracy floors vary, latency target ``1.2·s``): floors at
      fractions 0.3, 0.8, 0.6, 0.1 (burst), 0.9 of ``[lo, hi]``.

    ``cycles`` repeats the five phases.
    """
    fast, slow = (float(v) for v in latency_range_ms)
    if not 0 < fast <= slow:
        raise ValueError(f"reference_phases: need 0 < fastest <= slowest, got {latency_range_ms}")
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1:
        raise ValueError(f"reference_phases: cycles must be an int >= 1, got {cycles!r}")
    rate = load / (slow / 1e3)
    mid = (fast + slow) / 2
    if accuracy_range is None:
        one = [Phase(phase_s, rate, 1.3 * fast), Phase(phase_s, rate, mid), Phase(phase_s, rate, 1.1 * slow),
               Phase(phase_s, 2 * rate, (1.2 * fast, 2.0 * fast)), Phase(phase_s, rate, 0.8 * mid)]
    else:
        lo, hi = (float(v) for v in accuracy_range)
        floors = [0.3, 0.8, 0.6, 0.1, 0.9]
        rates = [rate, rate, rate, 2 * rate, rate]
        one = [Phase(phase_s, r, 1.2 * slow, accuracy_target=lo + f * (hi - lo)) for f, r in zip(floors, rates)]
    return one * cycles

"""Query arrival traces (SuperServe §6): Azure Functions (MAF), bursty and time-varying workloads.

A :class:`Trace` is a sorted array of arrival times in seconds, stored as a plain CSV (one
``arrival_s`` column) or JSON file, so any tool can produce or consume it.

* **MAF** — the Azure Functions 2019 trace (Shahrad et al., ATC '20; AzurePublicDataset,
  ``AzureFunctionsDataset2019.md``) ships per-minute invocation counts per function:
  ``invocations_per_function_md.anon.dNN.csv`` with columns ``HashOwner, HashApp, HashFunction,
  Trigger, 1 … 1440``. :func:`read_maf_invocations` sums the selected functions per minute;
  :func:`maf_trace` compresses the day(s) into ``duration_s`` seconds keeping the shape: the rate
  in each compressed minute window is proportional to that minute's invocations, scaled to a target
  mean rate (SuperServe: 24 h into 120 s at 6,400 q/s; its exact transformation is not published).
  Sub-second arrivals inside a window are synthesised as a renewal process (Poisson by default).
  The public files are never downloaded here.
* **Bursty** (InferLine-style) — a steady base stream (CV² = 0) plus a variant stream with Gamma
  inter-arrival times: for rate ``λ`` and squared coefficient of variation ``CV²`` the shape is
  ``1 / CV²`` and the scale ``CV² / λ`` (SuperServe: ``λ_b = 1500``, ``λ_v`` up to 5550, CV² 2/4/8).
* **Time-varying** — the mean rate moves from ``λ₁`` to ``λ₂`` at an acceleration ``τ`` (q/s²),
  arrivals Gamma with CV² = 8 by default (SuperServe: 2500 → 4800…7800 q/s, τ up to 5000 q/s²).

Non-constant rates use time rescaling: a unit-rate renewal process is mapped through the inverse
of the cumulative rate, so the CV² of the inter-arrival times holds locally at every rate.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ws_core.io import atomic_path

__all__ = [
    "MAF_MINUTES",
    "Trace",
    "bursty_trace",
    "gamma_arrivals",
    "maf_trace",
    "rate_trace",
    "read_maf_invocations",
    "synthetic_maf_invocations",
    "time_varying_trace",
    "write_maf_invocations",
]

MAF_MINUTES = 1440
_MAF_ID_COLUMNS = ("HashOwner", "HashApp", "HashFunction", "Trigger")


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


@dataclass(frozen=True)
class Trace:
    """Arrival times (seconds from the start, sorted) of a query stream.

    Example::

        >>> t = bursty_trace(base_rate=100, variant_rate=200, cv2=4, duration_s=10, seed=0)
        >>> round(t.mean_rate, -1)   # ~300 queries/s
        300.0
    """

    arrivals: np.ndarray
    name: str = "trace"
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        a = np.asarray(self.arrivals, dtype=np.float64).reshape(-1)
        if a.size and (not np.all(np.isfinite(a)) or a[0] < 0 or np.any(np.diff(a) < 0)):
            raise ValueError("Trace: arrivals must be finite, >= 0 and sorted ascending")
        a.setflags(write=False)
        object.__setattr__(self, "arrivals", a)
        object.__setattr__(self, "meta", dict(self.meta))

    def __len__(self) -> int:
        return int(self.arrivals.size)

    @property
    def duration(self) -> float:
        """The trace's length in seconds (``meta['duration_s']`` if given, else the last arrival)."""
        return float(self.meta.get("duration_s", self.arrivals[-1] if self.arrivals.size else 0.0))

    @property
    def mean_rate(self) -> float:
        """Queries per second over :attr:`duration`."""
        return len(self) / self.duration if self.duration > 0 else 0.0

    def rates(self, bin_s: float = 1.0) -> np.ndarray:
        """Arrivals per second in consecutive bins of ``bin_s`` seconds."""
        n = max(1, int(np.ceil(self.duration / bin_s)))
        counts, _ = np.histogram(self.arrivals, bins=n, range=(0.0, n * bin_s))
        return counts / bin_s

    def head(self, duration_s: float) -> Trace:
        """The first ``duration_s`` seconds."""
        cut = self.arrivals[self.arrivals < duration_s]
        return Trace(cut, self.name, dict(self.meta, duration_s=min(duration_s, self.duration)))

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.csv`` (header ``arrival_s``) or ``.json`` (``name``, ``meta``, ``arrivals``), atomically
        (:func:`ws_core.io.atomic_path`)."""
        path = Path(path)
        if path.suffix not in (".csv", ".json"):
            raise ValueError(f"Trace.save: path must end in .csv or .json, got {path.name!r}")
        with atomic_path(path) as tmp:
            if path.suffix == ".csv":
                with open(tmp, "w", newline="") as f:
                    f.write("arrival_s\n")
                    np.savetxt(f, self.arrivals, fmt="%.9f")
            else:
                with open(tmp, "w") as f:
                    json.dump({"name": self.name, "meta": dict(self.meta), "arrivals": self.arrivals.tolist()}, f)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Trace:
        """Read a trace written by :meth:`save` (or any one-column CSV of arrival seconds)."""
        path = Path(path)
        if path.suffix == ".json":
            with open(path) as f:
                d = json.load(f)
            if not isinstance(d, dict) or "arrivals" not in d:
                raise ValueError(f"{path}: a JSON trace needs an 'arrivals' list")
            return cls(np.asarray(d["arrivals"], dtype=np.float64), str(d.get("name", path.stem)), d.get("meta", {}))
        if path.suffix != ".csv":
            raise ValueError(f"Trace.load: path must end in .csv or .json, got {path.name!r}")
        with open(path) as f:
            first = f.readline().strip()
        skip = 0 if _is_number(first.split(",")[0]) else 1
        try:
            data = np.loadtxt(path, delimiter=",", skiprows=skip, usecols=0, ndmin=1, dtype=np.float64)
        except ValueError as e:
            raise ValueError(f"{path}: arrival times must be numbers ({e})") from None
        return cls(data, path.stem)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _check_rate(name: str, value: float, allow_zero: bool = False) -> None:
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value}")


def _renewal_units(total: float, cv2: float, rng: np.random.Generator) -> np.ndarray:
    """Points of a unit-rate renewal process on ``[0, total)`` with inter-arrival CV² ``cv2``."""
    if total <= 0:
        return np.zeros(0)
    if cv2 == 0:
        return np.arange(1.0, total, 1.0) if total > 1 else np.zeros(0)
    shape, scale = 1.0 / cv2, cv2
    chunks, t = [], 0.0
    block = int(total + 10 * np.sqrt(total * max(cv2, 1.0)) + 64)
    while t < total:
        gaps = rng.gamma(shape, scale, size=block)
        points = t + np.cumsum(gaps)
        chunks.append(points)
        t = float(points[-1])
    points = np.concatenate(chunks)
    return points[points < total]


def gamma_arrivals(
    rate: float, cv2: float, duration_s: float, seed: int | np.random.Generator | None = 0,
) -> np.ndarray:
    """Arrival times on ``[0, duration_s)`` with Gamma(1/CV², CV²/rate) inter-arrivals (CV² = 0: periodic)."""
    _check_rate("rate", rate)
    _check_rate("duration_s", duration_s)
    if not np.isfinite(cv2) or cv2 < 0:
        raise ValueError(f"cv2 must be a finite number >= 0, got {cv2}")
    return _renewal_units(rate * duration_s, cv2, _rng(seed)) / rate


def rate_trace(
    edges: Sequence[float], rates: Sequence[float], cv2: float = 1.0, seed: int | np.random.Generator | None = 0,
    name: str = "rate",
) -> Trace:
    """Arrivals for a piecewise-constant rate: ``rates[i]`` q/s on ``[edges[i], edges[i+1])``.

    A unit-rate renewal process with inter-arrival CV² ``cv2`` is mapped through the inverse of the
    cumulative rate (exact for piecewise-constant rates).
    """
    edges_a = np.asarray(edges, dtype=np.float64)
    rates_a = np.asarray(rates, dtype=np.float64)
    if edges_a.ndim != 1 or rates_a.ndim != 1 or edges_a.size != rates_a.size + 1 or rates_a.size == 0:
        raise ValueError(f"rate_trace: need len(edges) == len(rates) + 1 >= 2, got {edges_a.size} and {rates_a.size}")
    if np.any(np.diff(edges_a) <= 0) or edges_a[0] < 0:
        raise ValueError("rate_trace: edges must start at >= 0 and increase strictly")
    if not np.all(np.isfinite(rates_a)) or np.any(rates_a < 0):
        raise ValueError("rate_trace: rates must be finite and >= 0")
    if not np.isfinite(cv2) or cv2 < 0:
        raise ValueError(f"cv2 must be a finite number >= 0, got {cv2}")
    cumulative = np.concatenate([[0.0], np.cumsum(rates_a * np.diff(edges_a))])
    units = _renewal_units(float(cumulative[-1]), cv2, _rng(seed))
    # segment j with cumulative[j] <= u < cumulative[j + 1] (never a zero-rate segment), then invert linearly
    seg = np.clip(np.searchsorted(cumulative, units, side="right") - 1, 0, rates_a.size - 1)
    arrivals = edges_a[seg] + (units - cumulative[seg]) / rates_a[seg]
    meta = {"duration_s": float(edges_a[-1]), "cv2": cv2, "mean_rate": float(cumulative[-1] / edges_a[-1])}
    return Trace(arrivals, name, meta)


def bursty_trace(
    base_rate: float = 1500.0, variant_rate: float = 5550.0, cv2: float = 8.0, duration_s: float = 60.0,
    seed: int | np.random.Generator | None = 0,
) -> Trace:
    """A steady base stream (CV² = 0) at ``base_rate`` plus a Gamma stream at ``variant_rate`` with ``cv2``."""
    _check_rate("base_rate", base_rate, allow_zero=True)
    _check_rate("variant_rate", variant_rate, allow_zero=True)
    rng = _rng(seed)
    base = gamma_arrivals(base_rate, 0.0, duration_s, rng) if base_rate > 0 else np.zeros(0)
    variant = gamma_arrivals(variant_rate, cv2, duration_s, rng) if variant_rate > 0 else np.zeros(0)
    meta = {"duration_s": float(duration_s), "base_rate": base_rate, "variant_rate": variant_rate, "cv2": cv2}
    return Trace(np.sort(np.concatenate([base, variant])), f"bursty-cv2-{cv2:g}", meta)


def time_varying_trace(
    rate_start: float = 2500.0, rate_end: float = 6800.0, acceleration: float = 500.0, duration_s: float = 60.0,
    cv2: float = 8.0, ramp_start_s: float | None = None, step_s: float = 0.01,
    seed: int | np.random.Generator | None = 0,
) -> Trace:
    """Rate ``rate_start`` until ``ramp_start_s`` (default: a quarter of the trace), then a linear
    ramp at ``acceleration`` q/s² to ``rate_end``, held to the end; Gamma arrivals with ``cv2``.

    The ramp is discretised in ``step_s`` steps (piecewise-constant rate).
    """
    _check_rate("rate_start", rate_start)
    _check_rate("rate_end", rate_end)
    _check_rate("acceleration", acceleration)
    _check_rate("duration_s", duration_s)
    t0 = duration_s / 4 if ramp_start_s is None else float(ramp_start_s)
    if not 0 <= t0 <= duration_s:
        raise ValueError(f"ramp_start_s must be in [0, duration_s={duration_s}], got {t0}")
    edges = np.arange(0.0, duration_s, step_s)
    edges = np.append(edges, duration_s)
    mids = (edges[:-1] + edges[1:]) / 2
    direction = 1.0 if rate_end >= rate_start else -1.0
    ramp = rate_start + direction * acceleration * np.clip(mids - t0, 0.0, None)
    rates = np.where(mids < t0, rate_start, np.minimum(ramp, rate_end) if direction > 0 else np.maximum(ramp, rate_end))
    trace = rate_trace(edges, rates, cv2, seed, name=f"timevarying-{rate_start:g}-{rate_end:g}-tau{acceleration:g}")
    meta = dict(trace.meta, rate_start=rate_start, rate_end=rate_end, acceleration=acceleration, ramp_start_s=t0)
    return Trace(trace.arrivals, trace.name, meta)


# Azure Functions 2019 ---------------------------------------------------------------------------
def read_maf_invocations(
    paths: str | os.PathLike | Iterable[str | os.PathLike], triggers: Iterable[str] | None = None,
) -> np.ndarray:
    """Total invocations per minute of the selected functions, days concatenated in ``paths`` order.

    Args:
        paths: ``invocations_per_function_md.anon.dNN.csv`` file(s) of the Azure Functions 2019 trace.
        triggers: keep only these trigger types (``http``, ``timer``, ``event``, ``queue``, ``storage``,
            ``orchestration``, ``others``); ``None`` keeps all.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    wanted = None if triggers is None else {t.lower() for t in triggers}
    days = []
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or tuple(header[:4]) != _MAF_ID_COLUMNS or len(header) < 5:
                got = header[:5] if header else []
                raise ValueError(f"{path}: not an Azure Functions invocation file (expected columns "
                                 f"{', '.join(_MAF_ID_COLUMNS)}, 1 … {MAF_MINUTES}; got {got})")
            minutes = len(header) - 4
            total = np.zeros(minutes, dtype=np.int64)
            for line, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise ValueError(f"{path}:{line}: {len(row)} columns, the header has {len(header)}")
                if wanted is not None and row[3].lower() not in wanted:
                    continue
                try:
                    total += np.asarray(row[4:], dtype=np.int64)
                except ValueError:
                    raise ValueError(f"{path}:{line}: invocation counts must be integers") from None
        days.append(total)
    if not days:
        raise ValueError("read_maf_invocations: no files given")
    return np.concatenate(days)


def maf_trace(
    per_minute: Sequence[float] | np.ndarray, duration_s: float = 120.0, mean_rate: float = 6400.0,
    cv2: float = 1.0, seed: int | np.random.Generator | None = 0, name: str = "maf",
) -> Trace:
    """Compress per-minute invocation counts into ``duration_s`` seconds at ``mean_rate`` q/s.

    Minute ``m`` becomes a window of ``duration_s / M`` seconds whose rate is proportional to its
    invocations (the trace's shape is kept); arrivals inside are a renewal process with ``cv2``.
    """
    counts = np.asarray(per_minute, dtype=np.float64).reshape(-1)
    if counts.size == 0 or np.any(counts < 0) or not np.all(np.isfinite(counts)) or counts.sum() <= 0:
        raise ValueError("maf_trace: per_minute must be non-empty, finite, >= 0 and not all zero")
    _check_rate("duration_s", duration_s)
    _check_rate("mean_rate", mean_rate)
    edges = np.linspace(0.0, duration_s, counts.size + 1)
    rates = counts / counts.mean() * mean_rate
    trace = rate_trace(edges, rates, cv2, seed, name=name)
    meta = dict(trace.meta, minutes=int(counts.size), peak_rate=float(rates.max()), source="azure-functions-2019")
    return Trace(trace.arrivals, name, meta)


def write_maf_invocations(
    path: str | os.PathLike, counts: np.ndarray, triggers: Sequence[str] | None = None, seed: int = 0,
) -> Path:
    """Write per-function per-minute counts (``functions × minutes``) in the Azure Functions 2019 format.

    Owner/app/function columns get random hex names (the public files hold HMAC-SHA256 hashes).
    """
    counts = np.asarray(counts)
    if counts.ndim != 2:
        raise ValueError(f"write_maf_invocations: counts must be functions x minutes, got shape {counts.shape}")
    rng = np.random.default_rng(seed)
    triggers = list(triggers) if triggers is not None else ["http"] * counts.shape[0]
    if len(triggers) != counts.shape[0]:
        raise ValueError(f"write_maf_invocations: {counts.shape[0]} functions but {len(triggers)} triggers")
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*_MAF_ID_COLUMNS, *(str(m) for m in range(1, counts.shape[1] + 1))])
        for row, trigger in zip(counts, triggers):
            ids = [rng.bytes(32).hex() for _ in range(3)]
            w.writerow([*ids, trigger, *(int(v) for v in row)])
    return path


def synthetic_maf_invocations(num_functions: int = 200, minutes: int = MAF_MINUTES, seed: int = 0) -> np.ndarray:
    """Per-function per-minute counts shaped like the Azure Functions 2019 trace (a stand-in, not data).

    Heavy-tailed popularity across functions (log-normal, as Shahrad et al. report orders of magnitude
    between functions), a diurnal cycle, timer functions firing periodically, and a few minute-long
    bursts. Used where the public trace is not available (tests, offline benchmarks).
    """
    if num_functions < 1 or minutes < 1:
        raise ValueError(f"synthetic_maf_invocations: need num_functions, minutes >= 1, got {num_functions}, {minutes}")
    rng = np.random.default_rng(seed)
    t = np.arange(minutes)
    diurnal = 1.0 + 0.25 * np.sin(2 * np.pi * (t / 1440.0 - 0.3))
    popularity = rng.lognormal(mean=2.0, sigma=1.5, size=num_functions)
    counts = rng.poisson(popularity[:, None] * diurnal[None, :])
    timers = rng.random(num_functions) < 0.3
    for f in np.flatnonzero(timers):
        period = int(rng.choice([5, 10, 15, 30, 60]))
        counts[f] = 0
        counts[f, rng.integers(period)::period] = rng.poisson(popularity[f] * 2)
    per_minute = popularity.sum()
    for _ in range(max(1, minutes // 120)):
        f, m = rng.integers(num_functions), rng.integers(minutes)
        counts[f, m:m + int(rng.integers(1, 4))] += rng.poisson(0.2 * per_minute)
    return counts.astype(np.int64)

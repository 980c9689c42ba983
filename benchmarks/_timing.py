"""Timing helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``, which puts this
folder on ``sys.path``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

__all__ = ["percentile", "times_us"]


def times_us(fn: Callable, items: Iterable) -> list[float]:
    """Wall time of ``fn(item)`` for each item, in microseconds."""
    out = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0–1) of ``values``, nearest rank."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]

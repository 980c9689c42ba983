"""Summaries over repeated runs (seeds): mean ± standard error, paired differences and a verdict that
claims no more than the spread supports.

Pure functions of numbers, shared by the benchmarks of every package (ws-train's policies, ws-nas,
ws-fed, ws-sushi) and tested on hand-computed values:

* :func:`mean_se` — the mean over seeds and its standard error ``s / √n`` (``s``: the sample standard
  deviation, ``n − 1`` in the denominator); :class:`MeanSE` formats it as ``"mean ± se"``.
* :func:`paired_difference` — the per-seed differences ``a_i − b_i`` of two methods run on the same seeds,
  summarised the same way; :func:`separated` says whether its two-sided 95 % Student-t interval excludes 0
  (:func:`t_critical_95`: with 3 seeds the interval is ± 4.30 standard errors, not ± 2).
* :func:`verdict` — one line comparing one method with the others on one metric, claiming only the
  differences :func:`separated` supports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["MeanSE", "mean_se", "paired_difference", "separated", "t_critical_95", "verdict"]

#: two-sided 95 % quantiles of Student's t (0.975 quantile) for 1–30 degrees of freedom.
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
          2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
          2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


@dataclass(frozen=True)
class MeanSE:
    """A mean over ``n`` seeds and its standard error (``nan`` when ``n = 1``)."""

    mean: float
    se: float
    n: int

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        """``"mean ± se"`` with both multiplied by ``scale`` (100: percent), or just the mean when ``n = 1``.

        Example::

            >>> MeanSE(0.8512, 0.0031, 3).format(100, 1)
            '85.1 ± 0.3'
        """
        if math.isnan(self.se):
            return f"{self.mean * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {self.se * scale:.{digits}f}"


def _finite(name: str, values: Sequence[float]) -> list[float]:
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError(f"{name}: needs at least one value, got none")
    bad = [v for v in xs if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{name}: values must be finite numbers, got {bad} in {xs}")
    return xs


def mean_se(values: Sequence[float]) -> MeanSE:
    """Mean and standard error of the mean, ``s / √n`` with the sample standard deviation ``s``.

    Example::

        >>> m = mean_se([1.0, 2.0, 3.0])      # s = 1, se = 1 / √3
        >>> m.mean, round(m.se, 4), m.n
        (2.0, 0.5774, 3)
    """
    xs = _finite("mean_se", values)
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return MeanSE(mean, math.nan, 1)
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return MeanSE(mean, math.sqrt(var / n), n)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> MeanSE:
    """:func:`mean_se` of the per-seed differences ``a[i] − b[i]`` (both lists in the same seed order).

    Example::

        >>> d = paired_difference([0.80, 0.82, 0.84], [0.78, 0.81, 0.80])    # differences 0.02, 0.01, 0.04
        >>> round(d.mean, 4), round(d.se, 4)
        (0.0233, 0.0088)
    """
    xs, ys = _finite("paired_difference", a), _finite("paired_difference", b)
    if len(xs) != len(ys):
        raise ValueError(f"paired_difference: one value per seed in both lists, got {len(xs)} and {len(ys)}")
    return mean_se([x - y for x, y in zip(xs, ys)])


def t_critical_95(df: int) -> float:
    """The two-sided 95 % critical value of Student's t with ``df`` degrees of freedom (1.96 beyond 30).

    Example::

        >>> t_critical_95(2)          # 3 seeds
        4.303
    """
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df!r}")
    return _T_975[df - 1] if df <= len(_T_975) else 1.96


def separated(diff: MeanSE) -> bool:
    """Whether the two-sided 95 % t interval ``mean ± t(n − 1) · se`` of a paired difference excludes 0.

    A single seed (``n = 1``) separates nothing.

    Example::

        >>> separated(MeanSE(0.02, 0.004, 3)), separated(MeanSE(0.02, 0.005, 3))   # 4.303 × se vs 0.02
        (True, False)
    """
    if diff.n < 2 or math.isnan(diff.se):
        return False
    return abs(diff.mean) > t_critical_95(diff.n - 1) * diff.se


def verdict(values: Mapping[str, Sequence[float]], subject: str, metric: str, scale: float = 100.0,
            unit: str = " points") -> str:
    """One line comparing ``subject`` with every other policy on ``metric`` (higher is better).

    ``values[method]`` holds one number per seed, every method in the same seed order. For each other
    method the paired difference (subject − other) is given as mean ± standard error, and called
    "higher" / "lower" only when :func:`separated`; otherwise "not separated".

    Example::

        >>> verdict({"A": [0.80, 0.82, 0.84], "B": [0.70, 0.71, 0.72], "C": [0.79, 0.80, 0.85]}, "A", "min acc")
        'min acc, A vs B: higher (+11.00 ± 0.58 points, 3 seeds); A vs C: not separated (+0.67 ± 0.88 points, 3 seeds)'
    """
    if subject not in values:
        raise ValueError(f"verdict: subject must be one of {list(values)}, got {subject!r}")
    parts = []
    for other, ys in values.items():
        if other == subject:
            continue
        d = paired_difference(values[subject], ys)
        word = ("higher" if d.mean > 0 else "lower") if separated(d) else "not separated"
        spread = f"{d.mean * scale:+.2f}" if d.n == 1 else f"{d.mean * scale:+.2f} ± {d.se * scale:.2f}"
        parts.append(f"{subject} vs {other}: {word} ({spread}{unit}, {d.n} seed{'s' if d.n != 1 else ''})")
    return f"{metric}, " + "; ".join(parts)

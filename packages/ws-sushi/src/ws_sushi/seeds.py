"""A ws-sushi policy comparison repeated over query-stream seeds: mean ± standard error, paired changes,
verdicts.

One *run* is the outcome of :func:`ws_sushi.compare_policies` on one stream seed, as summaries:
``run[policy][metric]`` (``SimulationResult.summary()``, e.g. ``runs = [{name: r.summary() for name, r
in compare_policies(...).items()} for seed in seeds]``). Every run holds the same policies, served on
the same stream within a run, so differences between policies are paired per seed. The statistics are
ws-core's (:mod:`ws_core.stats`):

* :func:`policy_stats` — each policy's metrics as mean ± standard error over the runs;
* :func:`relative_change` — per seed ``subject / baseline − 1`` (e.g. −0.6: 60 % less off-chip energy),
  then mean ± standard error; :func:`difference` — per seed ``subject − baseline`` (e.g. served
  accuracy, to be shown in points);
* :func:`format_change` — ``"-62.3 ± 0.4%"``, with ``" (n.s.)"`` when the 95 % t interval of the paired
  change includes 0 (:func:`ws_core.stats.separated`);
* :func:`within` — whether the whole 95 % t interval of a change lies at or beyond a goal (e.g.
  ≤ −20 % latency);
* :func:`stream_verdict` — one line comparing the subject policy with every other one on served
  accuracy, mean latency and off-chip energy (:func:`ws_core.stats.verdict`: a difference is called
  higher or lower only when the seeds separate it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ws_core.stats import MeanSE, mean_se, paired_difference, separated, t_critical_95, verdict

__all__ = ["SEED_METRICS", "VERDICT_METRICS", "difference", "format_change", "policy_stats", "relative_change",
           "stream_verdict", "within"]

Runs = Sequence[Mapping[str, Mapping[str, float]]]

#: the summary metrics :func:`policy_stats` reports by default
SEED_METRICS = ("mean_latency_ms", "p99_latency_ms", "slo_attainment", "served_accuracy", "offchip_energy_mj",
                "cache_updates")
#: ``(metric, name, scale, unit)`` compared by :func:`stream_verdict`: served accuracy in points,
#: latency in milliseconds, off-chip energy in millijoules
VERDICT_METRICS = (("served_accuracy", "served accuracy", 100.0, " points"),
                   ("mean_latency_ms", "mean latency", 1.0, " ms"),
                   ("offchip_energy_mj", "off-chip energy", 1.0, " mJ"))


def _values(runs: Runs, policy: str, metric: str) -> list[float]:
    if not runs:
        raise ValueError("needs at least one run (one per seed), got none")
    out = []
    for i, run in enumerate(runs):
        if policy not in run:
            raise ValueError(f"run {i} has no policy {policy!r} (it has {sorted(run)})")
        if metric not in run[policy]:
            raise ValueError(f"run {i}, policy {policy!r} has no metric {metric!r}")
        out.append(float(run[policy][metric]))
    return out


def policy_stats(runs: Runs, metrics: Sequence[str] = SEED_METRICS) -> dict[str, dict[str, MeanSE]]:
    """``stats[policy][metric]``: mean ± standard error over the runs, for every policy of the first run."""
    if not runs:
        raise ValueError("policy_stats: needs at least one run (one per seed), got none")
    return {policy: {m: mean_se(_values(runs, policy, m)) for m in metrics} for policy in runs[0]}


def relative_change(runs: Runs, metric: str, subject: str, baseline: str) -> MeanSE:
    """Mean ± standard error over seeds of ``subject / baseline − 1`` on ``metric`` (paired per seed)."""
    a, b = _values(runs, subject, metric), _values(runs, baseline, metric)
    if any(v == 0 for v in b):
        raise ValueError(f"relative_change: {baseline!r} has {metric} = 0 in some run; no relative change")
    return mean_se([x / y - 1.0 for x, y in zip(a, b)])


def difference(runs: Runs, metric: str, subject: str, baseline: str) -> MeanSE:
    """Mean ± standard error over seeds of ``subject − baseline`` on ``metric`` (paired per seed)."""
    return paired_difference(_values(runs, subject, metric), _values(runs, baseline, metric))


def format_change(change: MeanSE, scale: float = 100.0, unit: str = "%", digits: int = 1) -> str:
    """``"+1.2 ± 0.3%"`` (signed), followed by ``" (n.s.)"`` when :func:`ws_core.stats.separated` is false.

    Example::

        >>> format_change(MeanSE(-0.623, 0.004, 3))
        '-62.3 ± 0.4%'
    """
    if math.isnan(change.se):
        text = f"{change.mean * scale:+.{digits}f}{unit}"
    else:
        text = f"{change.mean * scale:+.{digits}f} ± {change.se * scale:.{digits}f}{unit}"
    return text if separated(change) else text + " (n.s.)"


def within(change: MeanSE, goal: float) -> bool:
    """Whether the whole two-sided 95 % t interval of ``change`` lies at or beyond ``goal``, on the side
    of ``goal`` away from 0 (``goal = -0.2``: the interval's upper end is ≤ −0.2). False for one seed."""
    if change.n < 2 or math.isnan(change.se):
        return False
    half = t_critical_95(change.n - 1) * change.se
    return change.mean + half <= goal if goal < 0 else change.mean - half >= goal


def stream_verdict(runs: Runs, subject: str = "sgs",
                   metrics: Sequence[tuple[str, str, float, str]] = VERDICT_METRICS) -> str:
    """One line: ``subject`` vs every other policy on each metric, ``" | "``-separated
    (:func:`ws_core.stats.verdict`; "higher"/"lower" only where the paired 95 % t interval excludes 0)."""
    if not runs:
        raise ValueError("stream_verdict: needs at least one run (one per seed), got none")
    parts = []
    for metric, name, scale, unit in metrics:
        values = {policy: _values(runs, policy, metric) for policy in runs[0]}
        parts.append(verdict(values, subject, name, scale, unit))
    return " | ".join(parts)

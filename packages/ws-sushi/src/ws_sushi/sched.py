"""SushiSched: which SubNet serves each query, and which SubGraph stays cached on chip.

SUSHI's scheduler "controls which SubNets to serve and what to cache in real time". Its published
description stops there, so the rules below are this package's design, each a pure function:

**SubNet selection** (:func:`select_subnets`), per query with latency budget ``b`` (its latency
target minus the time it already waited) and an optional accuracy floor ``a``, given each candidate
SubNet's accuracy and its latency *with the current cached SubGraph*:

* ``objective="accuracy"`` (SushiSched's default): the most accurate SubNet with latency ≤ ``b`` and
  accuracy ≥ ``a`` (ties: the faster); if none meets both, the most accurate one within ``b``; if
  none is within ``b``, the fastest (best effort: the query misses its target, it is never dropped).
* ``objective="latency"``: the fastest SubNet with accuracy ≥ ``a`` (ties: the more accurate); if none
  reaches ``a``, the most accurate one.

**Cache update** (:func:`plan_subgraph`), every ``period`` queries over the last ``window`` queries:
the SubNets served in the window, most frequent first, give candidate SubGraphs
``G_k = fit(common_subgraph(top-k SubNets))`` for every k (the SubGraph the k most used SubNets
share, trimmed to the weight buffer by :func:`fit_subgraph`), plus the current SubGraph. Each
candidate is scored by replaying the window's targets through :func:`select_subnets` with that
SubGraph cached — (targets met, summed accuracy, −summed latency, −off-chip bytes), compared in this
order (for ``objective="latency"`` latency comes before accuracy) — and the best is cached; the
current SubGraph wins ties, so the cache only changes when that pays.

**Trimming** (:func:`fit_subgraph`): whole tensor regions are kept in priority order — by default
the layers with the fewest output positions first (fewest MACs per weight byte, i.e. the most
memory-bound, whose fetch the compute cannot hide) — skipping any that no longer fit.

Cache policies (:class:`NoCache`, :class:`StaticCache`, :class:`SubGraphStationary`) share one small
interface so the simulator can compare them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .subgraph import SubGraph, check_bits, common_subgraph

__all__ = [
    "CachePolicy",
    "NoCache",
    "SchedContext",
    "StaticCache",
    "SubGraphStationary",
    "fit_subgraph",
    "plan_subgraph",
    "score_subgraph",
    "select_subnet",
    "select_subnets",
]

OBJECTIVES = ("accuracy", "latency")

#: ``evaluate(cached) -> (latency_s [N], fetch_bytes [N])`` of every candidate SubNet
Evaluate = Callable[[SubGraph], tuple[np.ndarray, np.ndarray]]


def _check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    return objective


def _first_true(mask: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``mask`` [Q, N], the first column in ``order`` that is True; and whether any is."""
    ordered = mask[:, order]
    found = ordered.any(1)
    return order[ordered.argmax(1)], found


def select_subnets(
    accuracy: Sequence[float] | np.ndarray,
    latency: Sequence[float] | np.ndarray,
    budgets: Sequence[float] | np.ndarray,
    floors: Sequence[float] | np.ndarray | None = None,
    objective: str = "accuracy",
) -> np.ndarray:
    """SushiSched's SubNet choice for many queries at once (rules in the module docstring).

    Args:
        accuracy: ``[N]`` accuracy of each candidate SubNet.
        latency: ``[N]`` its latency with the current cached SubGraph (seconds).
        budgets: ``[Q]`` per query, the latency it may still take (seconds).
        floors: ``[Q]`` per query, the accuracy it needs (NaN: none); ``None``: no floors.
        objective: ``"accuracy"`` or ``"latency"``.

    Returns:
        ``[Q]`` indices into the candidates.
    """
    _check_objective(objective)
    acc = np.asarray(accuracy, dtype=np.float64)
    lat = np.asarray(latency, dtype=np.float64)
    if acc.ndim != 1 or acc.shape != lat.shape or not len(acc):
        raise ValueError(f"select_subnets: accuracy and latency must be equal-length 1-D, got {acc.shape}, {lat.shape}")
    budgets = np.atleast_1d(np.asarray(budgets, dtype=np.float64))
    floors = np.full(budgets.shape, np.nan) if floors is None else np.atleast_1d(np.asarray(floors, np.float64))
    if floors.shape != budgets.shape:
        raise ValueError(f"select_subnets: {budgets.shape[0]} budgets but {floors.shape[0]} floors")
    reaches = ~(acc[None, :] < floors[:, None])            # NaN floor: every SubNet reaches it
    by_accuracy = np.lexsort((lat, -acc))                    # most accurate first, then fastest
    by_latency = np.lexsort((-acc, lat))                     # fastest first, then most accurate
    if objective == "accuracy":
        within = lat[None, :] <= budgets[:, None]
        choice, found = _first_true(within & reaches, by_accuracy)
        fallback, found2 = _first_true(within, by_accuracy)
        choice = np.where(found, choice, np.where(found2, fallback, by_latency[0]))
    else:
        choice, found = _first_true(reaches, by_latency)
        choice = np.where(found, choice, by_accuracy[0])
    return choice.astype(np.int64)


def select_subnet(
    accuracy: Sequence[float] | np.ndarray,
    latency: Sequence[float] | np.ndarray,
    budget: float,
    floor: float | None = None,
    objective: str = "accuracy",
) -> int:
    """SushiSched's SubNet choice for one query (see :func:`select_subnets`).

    Example::

        >>> select_subnet(accuracy=[0.70, 0.74, 0.77], latency=[1.0, 2.0, 3.0], budget=2.5)
        1
    """
    return int(select_subnets(accuracy, latency, [budget], None if floor is None else [floor], objective)[0])


def fit_subgraph(
    subgraph: SubGraph,
    capacity_bytes: int,
    bits: int = 8,
    priority: Mapping[str, float] | None = None,
) -> SubGraph:
    """The part of ``subgraph`` that fits in ``capacity_bytes``: whole tensor regions, greedily.

    Tensors are taken in ascending ``priority`` (missing keys: ``+inf``; ties keep the SubGraph's
    order), each kept if it still fits; a tensor that does not fit is skipped and smaller ones
    after it may still be kept.
    """
    check_bits(bits)
    if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, (int, np.integer)) or capacity_bytes < 0:
        raise ValueError(f"fit_subgraph: capacity_bytes must be an int >= 0, got {capacity_bytes!r}")
    sizes = subgraph.tensor_bytes(bits)
    if sum(sizes.values()) <= capacity_bytes:
        return subgraph
    keys = list(subgraph)
    if priority is not None:
        keys.sort(key=lambda k: priority.get(k, float("inf")))
    kept, used = [], 0
    for key in keys:
        if used + sizes[key] <= capacity_bytes:
            kept.append(key)
            used += sizes[key]
    return subgraph.restrict(kept)


def score_subgraph(
    latency: np.ndarray,
    fetch: np.ndarray,
    accuracy: np.ndarray,
    budgets: np.ndarray,
    floors: np.ndarray | None,
    objective: str = "accuracy",
) -> tuple[float, ...]:
    """Score of a cached SubGraph on a window of queries (higher is better; see module docstring).

    ``latency`` and ``fetch`` are every candidate's latency and off-chip bytes with that SubGraph.
    """
    idx = select_subnets(accuracy, latency, budgets, floors, objective)
    met = float((latency[idx] <= budgets).sum())
    acc, lat, fb = float(accuracy[idx].sum()), float(latency[idx].sum()), float(fetch[idx].sum())
    return (met, acc, -lat, -fb) if objective == "accuracy" else (met, -lat, acc, -fb)


def plan_subgraph(
    evaluate: Evaluate,
    accuracy: Sequence[float] | np.ndarray,
    subgraphs: Sequence[SubGraph],
    served: Sequence[int],
    budgets: Sequence[float],
    floors: Sequence[float] | None,
    capacity_bytes: int,
    bits: int = 8,
    priority: Mapping[str, float] | None = None,
    current: SubGraph | None = None,
    objective: str = "accuracy",
    memo: dict | None = None,
) -> SubGraph:
    """The SubGraph to cache next, from the recent query mix (rules in the module docstring).

    Args:
        evaluate: ``cached -> (latency [N], fetch bytes [N])`` of every candidate SubNet.
        accuracy: ``[N]`` candidate accuracies.
        subgraphs: ``[N]`` each candidate's SubGraph.
        served: indices of the SubNets served in the window (most recent last).
        budgets: the window's latency targets (seconds).
        floors: the window's accuracy floors (NaN or ``None``: none).
        capacity_bytes: on-chip weight buffer.
        current: the SubGraph cached now (kept on ties).
        memo: optional dict reused across calls to remember the fitted common SubGraph of each
            set of SubNets (a pure speed-up; results are identical). Reuse one memo only with the
            same ``subgraphs``, ``capacity_bytes``, ``bits`` and ``priority``.
    """
    _check_objective(objective)
    accuracy = np.asarray(accuracy, dtype=np.float64)
    budgets = np.asarray(budgets, dtype=np.float64)
    floors_arr = None if floors is None else np.asarray(floors, dtype=np.float64)
    current = current if current is not None else SubGraph()
    if not len(served):
        return current
    counts: dict[int, int] = {}
    last_seen: dict[int, int] = {}
    for t, i in enumerate(served):
        counts[int(i)] = counts.get(int(i), 0) + 1
        last_seen[int(i)] = t
    order = sorted(counts, key=lambda i: (-counts[i], -last_seen[i]))  # most frequent, then most recent
    options: list[SubGraph] = [current]
    common, covered = None, 0  # `common` is the common SubGraph of order[:covered]
    for k, i in enumerate(order):
        key = frozenset(order[: k + 1])
        fitted = None if memo is None else memo.get(key)
        if fitted is None:
            if covered == k and common is not None:
                common = common.intersect(subgraphs[i])
            else:
                common = common_subgraph(subgraphs[j] for j in order[: k + 1])
            covered = k + 1
            fitted = fit_subgraph(common, capacity_bytes, bits, priority)
            if memo is not None:
                if len(memo) >= 4096:
                    memo.clear()
                memo[key] = fitted
        if fitted not in options:
            options.append(fitted)
    best, best_score = current, None
    for g in options:
        lat, fetch = evaluate(g)
        score = score_subgraph(np.asarray(lat), np.asarray(fetch), accuracy, budgets, floors_arr, objective)
        if best_score is None or score > best_score:
            best, best_score = g, score
    return best


# Cache policies ---------------------------------------------------------------------------------
@dataclass
class SchedContext:
    """What a cache policy may look at: the candidates, their costs and the weight buffer."""

    evaluate: Evaluate
    accuracy: np.ndarray
    subgraphs: list[SubGraph]
    capacity_bytes: int
    bits: int
    priority: Mapping[str, float] | None = None
    objective: str = "accuracy"
    memo: dict = field(default_factory=dict)


class CachePolicy:
    """Base class: which SubGraph is cached at the start, and when and how it changes.

    Subclasses override :meth:`initial` and, for dynamic policies, :meth:`update`.
    """

    name = "base"

    def initial(self, ctx: SchedContext) -> SubGraph:
        """The SubGraph cached before the first query."""
        return SubGraph()

    def update(self, ctx: SchedContext, step: int, current: SubGraph, served: Sequence[int],
               budgets: Sequence[float], floors: Sequence[float]) -> SubGraph | None:
        """Called after query ``step`` (0-based); a new SubGraph to cache, or ``None`` to keep ``current``.

        ``served[:step + 1]``, ``budgets[:step + 1]`` and ``floors[:step + 1]`` are the SubNets served so
        far and those queries' latency targets and accuracy floors (later entries, if any, are not
        yet known to the scheduler and must not be read).
        """
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoCache(CachePolicy):
    """Baseline: nothing stays on chip; every query fetches all its weights."""

    name = "no-cache"


class StaticCache(CachePolicy):
    """Baseline: one SubGraph cached for the whole stream.

    Args:
        subgraph: the SubGraph to cache; default: the largest SubGraph common to every candidate
            SubNet (their :func:`~ws_sushi.subgraph.common_subgraph`), trimmed to the buffer.
    """

    name = "static"

    def __init__(self, subgraph: SubGraph | None = None) -> None:
        self.subgraph = subgraph

    def initial(self, ctx: SchedContext) -> SubGraph:
        if self.subgraph is not None:
            size = self.subgraph.nbytes(ctx.bits)
            if size > ctx.capacity_bytes:
                raise ValueError(f"StaticCache: the SubGraph needs {size} bytes at {ctx.bits} bits but the weight "
                                 f"buffer holds {ctx.capacity_bytes} bytes")
            return self.subgraph
        return fit_subgraph(common_subgraph(ctx.subgraphs), ctx.capacity_bytes, ctx.bits, ctx.priority)


class SubGraphStationary(CachePolicy):
    """SUSHI's SubGraph-Stationary cache: re-chosen from the recent query mix by :func:`plan_subgraph`.

    Args:
        window: how many recent queries the plan looks at.
        period: re-plan after every ``period`` queries.
    """

    name = "sgs"

    def __init__(self, window: int = 64, period: int = 16) -> None:
        for label, value in (("window", window), ("period", period)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SubGraphStationary: {label} must be an int >= 1, got {value!r}")
        self.window, self.period = window, period

    def __repr__(self) -> str:
        return f"SubGraphStationary(window={self.window}, period={self.period})"

    def initial(self, ctx: SchedContext) -> SubGraph:
        return StaticCache().initial(ctx)

    def update(self, ctx: SchedContext, step: int, current: SubGraph, served: Sequence[int],
               budgets: Sequence[float], floors: Sequence[float]) -> SubGraph | None:
        if (step + 1) % self.period:
            return None
        hi = step + 1
        lo = max(0, hi - self.window)
        return plan_subgraph(ctx.evaluate, ctx.accuracy, ctx.subgraphs, served[lo:hi], budgets[lo:hi],
                             floors[lo:hi], ctx.capacity_bytes, ctx.bits, ctx.priority, current, ctx.objective,
                             ctx.memo)


"""Scheduling policies: queue state + profile -> decision (which SubNet, how many queries).

Every policy is built once from a :class:`~ws_serve.profile.Profile` (the offline phase) and then
answers :meth:`Policy.decide` — a pure function of a :class:`QueueState` — whenever a worker is free
and the global earliest-deadline-first queue is not empty. The same objects drive the live router
and the discrete-event simulator.

* :class:`SlackFit` (``slackfit``, the default) — SuperServe's SlackFit rule made queue-aware and
  exact. With ``n`` queued queries, ``W`` alive workers and ``slack`` the earliest deadline's slack,
  the batch ``b`` is the **largest** ``b <= min(n, B_max)`` that some SubNet serves within the slack
  (it drains the most of the queue); the queue then needs ``r = ceil(n / (b W))`` such batches per
  worker, so each gets ``slack / r``, and the SubNet is the **most accurate** one with
  ``L(s, b) <= slack / r`` (then the cheaper one: lower ``L(s, b)``, then lower index; the fastest
  at ``b`` when none fits that share — the queue cannot drain in time and is drained as fast as
  possible). One queued query is thus served by the most accurate SubNet that fits the slack (on
  :func:`~ws_serve.profile.superserve_paper_profile` with 20 ms of slack: the 80.16% SubNet, 8.4 ms at
  batch 1), a short queue by the most accurate SubNet that serves it in one batch, and a backlog by
  SubNets cheap enough to clear it before the head's deadline — before the head's slack has run out,
  which is when the paper's rule reacts. Offline it sorts, per batch size, the SubNets by latency with
  the best SubNet of every latency prefix; a decision is two binary searches, O(log B + log S).
* :class:`SlackFitPaper` (``slackfit-paper``) — the paper's rule as printed (§4.2). Offline:
  ``num_buckets`` evenly spaced latency edges from the fastest entry of the profile,
  ``min_s L(s, 1)``, to the slowest, ``max_s L(s, B_max)``; each edge keeps the (SubNet, batch)
  whose latency is at most the edge with the **largest batch**, ties going to the higher accuracy.
  Online: the slack of the earliest deadline picks the highest edge that is at most the slack (O(1):
  one division), and the batch is the bucket's batch capped by the queue length — so a short queue
  gets a SubNet chosen for a batch it cannot fill.
* :class:`MaxBatch` / :class:`MaxAcc` — the paper's in-system baselines (App. A.5).
* :class:`FixedSubNet` — Clipper+/Clockwork-style: one static SubNet, dynamic batching to the slack.
* :class:`MinCost` — INFaaS-style without an accuracy floor: always the cheapest SubNet.

Decisions the paper leaves open, as implemented here:

* **Bucket count** (``slackfit-paper``): ``num_buckets=100`` by default — the chosen latency is then
  within 1% of the profile's latency range below the slack, and a decision is still a single division.
* **Bucket membership** (``slackfit-paper``): a candidate only has to fit under the bucket's edge (the
  main text's rule), not lie inside the bucket's range, so every bucket has a candidate.
* **Batch vs accuracy** (``slackfit``): batch first, as in the paper's buckets. Accuracy first over the
  same queue-feasible options is exactly :class:`MaxAcc` (when latency is non-decreasing in the batch
  size, which :meth:`Profile.monotone` enforces), which cannot keep up under load.
* **The backlog's share of the slack** (``slackfit``): the head's slack divided evenly over the
  ``ceil(n / (b W))`` batches each worker needs for the queue. It assumes every queued query has the
  head's deadline (later arrivals have later ones), which errs towards cheaper SubNets in a burst; the
  latest deadline in place of the head's was measured too and kept less of the queue in time
  (simulator, paper profile, CV² 8 at 1.5× the paper's load: 0.84 SLO attainment vs 0.99).
* **Handling cost of the backlog** (``slackfit``): the profile holds forward passes only, but every
  queued query also costs the server ``QueueState.query_cost_ms`` to decode and answer (``ws-serve run
  --query-cost-ms``; :func:`ws_serve.calibration.estimate_query_cost` derives it from a measured
  capacity). On a CPU server that work shares the cores with the forward, so the slack left for the
  ``r`` batches is ``slack - n · query_cost_ms``: a backlog whose handling alone eats the slack is
  drained by the fastest SubNets even when the forward of the largest would fit. With the default of 0
  the rule is the one above; on a GPU, where handling runs beside the forward, 0 is right.
* **Slack below every option** (also for the baselines, relative to the fastest option *they* may
  use, :meth:`Policy.fastest_ms`): the router and simulator by default answer such queries at once
  with an explicit deadline error instead of occupying a worker (``late="drop"``); with
  ``late="serve"`` the policy is still asked and answers best effort: the largest batch the queue
  allows (``min(queued, B_max)``, which drains the backlog fastest) on the policy's cheapest SubNet
  (``slackfit``: the SubNet fastest at that batch).
* **Dispatch overhead**: the overhead of one dispatch (one batch sent to a worker: ``Router``'s
  ``overhead_ms``, ``ws-serve run --overhead-ms``, ``simulate(overhead_ms=...)``) is added by the
  caller to ``QueueState.now``, so ``slack = deadline - (now + overhead)`` and an option fits when
  ``L(s, b) + overhead <= deadline - now``. Policies take no overhead of their own (it would count twice).
* **No waiting to fill batches**: dispatch is work-conserving, as in the paper.
"""

from __future__ import annotations

import abc
import bisect
from dataclasses import dataclass
from typing import ClassVar

from .profile import Profile

__all__ = [
    "POLICIES",
    "Decision",
    "FixedSubNet",
    "MaxAcc",
    "MaxBatch",
    "MinCost",
    "Policy",
    "QueueState",
    "SlackFit",
    "SlackFitPaper",
    "make_policy",
    "slackfit_buckets",
]


@dataclass(frozen=True)
class QueueState:
    """What a policy sees: the time, the earliest deadline in the queue, the queue length and the
    workers that will drain the queue.

    Times are in seconds on one clock; ``length`` counts queued queries (samples); ``workers`` counts
    the alive workers (the one being dispatched to included); ``query_cost_ms`` is the time each queued
    query costs the server outside the forward pass (decoding, replying, the transport's work), which
    on a CPU server competes with the forward for the same cores.
    """

    now: float
    head_deadline: float
    length: int
    workers: int = 1
    query_cost_ms: float = 0.0

    @property
    def slack_ms(self) -> float:
        """Time left before the earliest deadline, in milliseconds."""
        return (self.head_deadline - self.now) * 1e3


@dataclass(frozen=True)
class Decision:
    """Run the next ``batch_size`` earliest-deadline queries through profile SubNet ``subnet``."""

    subnet: int
    batch_size: int


class Policy(abc.ABC):
    """A scheduling policy bound to one profile; ``decide`` must not change any state."""

    name: ClassVar[str] = ""

    def __init__(self, profile: Profile) -> None:
        if not isinstance(profile, Profile):
            raise TypeError(f"{type(self).__name__}: profile must be a ws_serve Profile, got {type(profile).__name__}")
        self.profile = profile
        self._cheapest = min(range(profile.num_subnets), key=lambda s: (profile.latency(s, 1), s))

    @abc.abstractmethod
    def _decide(self, queue: QueueState, slack_ms: float) -> Decision:
        """Decision when ``slack_ms >= self.fastest_ms()`` and the queue is not empty."""

    def decide(self, queue: QueueState) -> Decision:
        """The (SubNet, batch size) to dispatch for this queue state (``queue.length >= 1``)."""
        if queue.length < 1:
            raise ValueError(f"{type(self).__name__}.decide: the queue must hold >= 1 query, got {queue.length}")
        slack = queue.slack_ms
        if slack < self.fastest_ms():
            return self.best_effort(queue)
        return self._decide(queue, slack)

    def fastest_ms(self) -> float:
        """Latency of the fastest option this policy may choose (a query with less slack is late)."""
        return self.profile.latency(self._cheapest, 1)

    def best_effort(self, queue: QueueState) -> Decision:
        """For a late head: the policy's cheapest SubNet at the largest batch (drains fastest)."""
        return Decision(self._cheapest, min(self.profile.max_batch, queue.length))

    def decide_pinned(self, queue: QueueState, subnet: int) -> Decision:
        """For a head query that names its SubNet (profile index ``subnet``; the request parameter
        ``subnet_id``): that SubNet at the largest batch it serves within the slack, capped by the queue
        (the largest batch the queue allows when no batch fits)."""
        b = _largest_batch(self.profile.latency_ms[subnet], queue.slack_ms) or self.profile.max_batch
        return Decision(subnet, min(b, queue.length))

    def describe(self) -> str:
        return self.name


def _largest_batch(row: tuple[float, ...], budget_ms: float) -> int:
    """Largest ``b`` with ``row[b - 1] <= budget_ms`` (``row`` non-decreasing); 0 if none."""
    return bisect.bisect_right(row, budget_ms)


def slackfit_buckets(profile: Profile, num_buckets: int) -> tuple[tuple[float, ...], tuple[Decision, ...]]:
    """SlackFit's offline buckets: evenly spaced latency edges and each edge's (SubNet, batch).

    Edge ``k`` is ``lo + k (hi - lo) / (K - 1)`` with ``lo = min_s L(s, 1)`` and
    ``hi = max_s L(s, B_max)``; its entry is, among all (s, b) with ``L(s, b) <= edge``, the one with
    the largest ``b``, then the highest accuracy, then the lowest latency. Pure function.
    """
    if num_buckets < 2:
        raise ValueError(f"slackfit_buckets: num_buckets must be >= 2, got {num_buckets}")
    p = profile
    options = [(p.latency(s, b), s, b) for s in range(p.num_subnets) for b in range(1, p.max_batch + 1)]
    lo = min(lat for lat, _, b in options if b == 1)
    hi = max(lat for lat, _, _ in options)
    edges = tuple(lo + (hi - lo) * k / (num_buckets - 1) for k in range(num_buckets)) if hi > lo else (lo,) * 2
    entries = []
    for edge in edges:
        fits = [(b, p.accuracies[s], -lat, s) for lat, s, b in options if lat <= edge * (1 + 1e-12)]
        b, _, _, s = max(fits)
        entries.append(Decision(s, b))
    return edges, tuple(entries)


class SlackFit(Policy):
    """Queue-aware SlackFit (the default): the largest batch the queue and the slack allow, then the most
    accurate SubNet that serves it within its share of the slack (see module doc).

    Example::

        >>> from ws_serve.profile import Profile
        >>> p = Profile(("a", "b"), (70.0, 80.0), ((1.0, 2.0), (2.0, 4.0)))
        >>> policy = SlackFit(p)
        >>> policy.decide(QueueState(now=0.0, head_deadline=0.0035, length=1))  # one query: SubNet b fits at batch 1
        Decision(subnet=1, batch_size=1)
        >>> policy.decide(QueueState(now=0.0, head_deadline=0.0045, length=2))  # one batch of 2: b takes 4 ms
        Decision(subnet=1, batch_size=2)
        >>> policy.decide(QueueState(now=0.0, head_deadline=0.0045, length=4))  # two batches: 2.25 ms each -> a
        Decision(subnet=0, batch_size=2)
        >>> # one batch of 2 whose handling costs 0.5 ms per query: 4.5 - 2 * 0.5 = 3.5 ms is left -> a
        >>> policy.decide(QueueState(now=0.0, head_deadline=0.0045, length=2, query_cost_ms=0.5))
        Decision(subnet=0, batch_size=2)
    """

    name = "slackfit"

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        p = profile
        by_batch = [[p.latency(s, b) for s in range(p.num_subnets)] for b in range(1, p.max_batch + 1)]
        # per batch size: SubNets by latency (ties: more accurate first), and the best SubNet of every prefix
        self._order = tuple(tuple(sorted(range(p.num_subnets), key=lambda s, row=row: (row[s], -p.accuracies[s], s)))
                            for row in by_batch)
        self._sorted_ms = tuple(tuple(row[s] for s in order) for row, order in zip(by_batch, self._order))
        best = []
        for row, order in zip(by_batch, self._order):
            prefix, top = [], order[0]
            for s in order:
                if (p.accuracies[s], -row[s], -s) > (p.accuracies[top], -row[top], -top):
                    top = s
                prefix.append(top)
            best.append(tuple(prefix))
        self._best = tuple(best)
        self._fastest_by_batch = tuple(ms[0] for ms in self._sorted_ms)  # min_s L(s, b), b = 1..B_max
        self._bisect_batch = all(a <= b for a, b in zip(self._fastest_by_batch, self._fastest_by_batch[1:]))
        self._cheapest = self._order[0][0]

    def fastest_ms(self) -> float:
        """``min_s L(s, 1)`` when latency is non-decreasing in the batch size; else the fastest of any batch."""
        return min(self._fastest_by_batch)

    def best_effort(self, queue: QueueState) -> Decision:
        """For a late head: the SubNet fastest at the largest batch the queue allows (drains fastest)."""
        b = min(self.profile.max_batch, queue.length)
        return Decision(self._order[b - 1][0], b)

    def _batch(self, slack_ms: float, n: int) -> int:
        """Largest ``b <= n`` that some SubNet serves within ``slack_ms`` (0 if none)."""
        fastest = self._fastest_by_batch
        if self._bisect_batch:
            return bisect.bisect_right(fastest, slack_ms, 0, n)
        return next((b for b in range(n, 0, -1) if fastest[b - 1] <= slack_ms), 0)

    def _decide(self, queue: QueueState, slack_ms: float) -> Decision:
        b = self._batch(slack_ms, min(self.profile.max_batch, queue.length))
        if b == 0:
            return self.best_effort(queue)
        rounds = -(-queue.length // (b * max(1, queue.workers)))  # batches per worker to drain the queue
        share = (slack_ms - queue.length * queue.query_cost_ms) / rounds
        k = bisect.bisect_right(self._sorted_ms[b - 1], share) - 1
        if k < 0:  # the queue cannot drain in time at this batch: drain it as fast as possible
            return Decision(self._order[b - 1][0], b)
        return Decision(self._best[b - 1][k], b)


class SlackFitPaper(Policy):
    """SuperServe's SlackFit as printed: the earliest deadline's slack picks a latency bucket (see module doc).

    Example::

        >>> from ws_serve.profile import Profile
        >>> p = Profile(("a", "b"), (70.0, 80.0), ((1.0, 2.0), (2.0, 4.0)))
        >>> policy = SlackFitPaper(p, num_buckets=4)   # edges 1, 2, 3, 4 ms
        >>> policy.decide(QueueState(now=0.0, head_deadline=0.0035, length=8))  # 3.5 ms: edge 3 -> (a, 2)
        Decision(subnet=0, batch_size=2)
        >>> policy.decide(QueueState(now=0.0, head_deadline=0.004, length=8))   # edge 4 -> (b, 2)
        Decision(subnet=1, batch_size=2)
    """

    name = "slackfit-paper"

    def __init__(self, profile: Profile, num_buckets: int = 100) -> None:
        super().__init__(profile)
        self.num_buckets = num_buckets
        self.edges, self.entries = slackfit_buckets(profile, num_buckets)
        self._lo = self.edges[0]
        span = self.edges[-1] - self.edges[0]
        self._inv_width = (len(self.edges) - 1) / span if span > 0 else 0.0

    def fastest_ms(self) -> float:
        return self._lo

    def bucket(self, slack_ms: float) -> int:
        """Index of the highest edge ``<= slack_ms`` (``slack_ms >= edges[0]``)."""
        k = min(len(self.edges) - 1, int((slack_ms - self._lo) * self._inv_width))
        if self.edges[k] > slack_ms:  # guard against rounding at an edge
            k -= 1
        return max(k, 0)

    def _decide(self, queue: QueueState, slack_ms: float) -> Decision:
        entry = self.entries[self.bucket(slack_ms)]
        return Decision(entry.subnet, min(entry.batch_size, queue.length))

    def describe(self) -> str:
        return f"slackfit-paper(buckets={self.num_buckets})"


class MaxBatch(Policy):
    """Largest batch the least accurate SubNet can serve in the slack, then the most accurate SubNet
    that serves that batch in the slack (SuperServe App. A.5)."""

    name = "maxbatch"

    def _decide(self, queue: QueueState, slack_ms: float) -> Decision:
        p = self.profile
        b = max(1, _largest_batch(p.latency_ms[0], slack_ms))
        s = max((s for s in range(p.num_subnets) if p.latency(s, b) <= slack_ms), default=self._cheapest)
        return Decision(s, min(b, queue.length))


class MaxAcc(Policy):
    """Most accurate SubNet that serves one query in the slack, then the largest batch it serves in
    the slack, capped by the queue (SuperServe App. A.5)."""

    name = "maxacc"

    def _decide(self, queue: QueueState, slack_ms: float) -> Decision:
        p = self.profile
        s = max((s for s in range(p.num_subnets) if p.latency(s, 1) <= slack_ms), default=self._cheapest)
        b = max(1, _largest_batch(p.latency_ms[s], slack_ms))
        return Decision(s, min(b, queue.length))


class FixedSubNet(Policy):
    """One static SubNet with dynamic batching (Clipper+ / Clockwork-style single-model serving).

    Args:
        profile: the profile.
        subnet: profile index, or SubNet id, of the served SubNet.
    """

    name = "fixed"

    def __init__(self, profile: Profile, subnet: int | str = 0) -> None:
        super().__init__(profile)
        if isinstance(subnet, str):
            subnet = profile.index(subnet)
        if not 0 <= subnet < profile.num_subnets:
            raise ValueError(f"FixedSubNet: subnet must be in [0, {profile.num_subnets}), got {subnet}")
        self.subnet = subnet

    def fastest_ms(self) -> float:
        return self.profile.latency(self.subnet, 1)

    def best_effort(self, queue: QueueState) -> Decision:
        return Decision(self.subnet, min(self.profile.max_batch, queue.length))

    def _decide(self, queue: QueueState, slack_ms: float) -> Decision:
        return self.decide_pinned(queue, self.subnet)

    def describe(self) -> str:
        return f"fixed({self.profile.subnet_ids[self.subnet]}, acc={self.profile.accuracies[self.subnet]:g})"


class MinCost(FixedSubNet):
    """Always the cheapest SubNet (lowest batch-1 latency), dynamic batching (INFaaS without an
    accuracy threshold)."""

    name = "mincost"

    def __init__(self, profile: Profile) -> None:
        Policy.__init__(self, profile)
        self.subnet = self._cheapest

    def describe(self) -> str:
        return "mincost"


POLICIES: dict[str, type[Policy]] = {
    "slackfit": SlackFit,
    "slackfit-paper": SlackFitPaper,
    "maxbatch": MaxBatch,
    "maxacc": MaxAcc,
    "fixed": FixedSubNet,
    "mincost": MinCost,
}


def make_policy(name: str, profile: Profile, **kwargs) -> Policy:
    """Build a policy by name (``slackfit``, ``slackfit-paper``, ``maxbatch``, ``maxacc``, ``fixed``, ``mincost``).

    ``fixed`` takes ``subnet`` (index or id); ``"fixed:<index or id>"`` is accepted as a shorthand.
    """
    base, _, arg = name.partition(":")
    cls = POLICIES.get(base)
    if cls is None:
        raise ValueError(f"unknown policy {name!r}; allowed {sorted(POLICIES)} (fixed also as 'fixed:<subnet>')")
    if arg:
        if cls is not FixedSubNet:
            raise ValueError(f"policy {base!r} takes no ':' argument, got {name!r}")
        kwargs["subnet"] = arg if arg in profile.subnet_ids or not arg.lstrip("-").isdigit() else int(arg)
    return cls(profile, **kwargs)

"""Discrete-event simulation of the serving system, driven by a latency profile.

The simulated system is the live one without the network: one global earliest-deadline-first queue,
``num_workers`` identical workers, and the *same* :class:`~ws_serve.policies.Policy` objects the
router uses, called whenever a worker is free and the queue is not empty (work-conserving). A batch
of ``b`` queries on SubNet ``s`` occupies a worker for ``profile.latency(s, b)`` (plus an optional
dispatch overhead). This evaluates policies at the paper's scale — thousands of queries per second
on 8 workers — on any machine.

Metrics (SuperServe §6): **SLO attainment** — the fraction of all queries that finish by their
deadline; **mean serving accuracy** — the mean profiled accuracy of the SubNets that served the
queries that met their SLO.

Faults: ``worker_failures`` lists times at which one worker dies (the busiest one: the one that would
finish last); its in-flight batch goes back to the queue (retried), as in the live router.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .policies import Policy, QueueState
from .traces import Trace

__all__ = ["SimulationResult", "simulate"]


@dataclass
class SimulationResult:
    """Outcome of :func:`simulate`. Counts are queries; times in seconds."""

    policy: str
    num_workers: int
    queries: int
    met_slo: int
    served_late: int
    dropped: int
    rejected: int
    unserved: int
    accuracy_sum: float
    batches: int
    busy_time_s: float
    duration_s: float
    subnet_queries: Counter = field(default_factory=Counter)
    retried: int = 0

    @property
    def slo_attainment(self) -> float:
        """Fraction of all queries that finished by their deadline."""
        return self.met_slo / self.queries if self.queries else 1.0

    @property
    def mean_accuracy(self) -> float:
        """Mean profiled accuracy over the queries that met their SLO (nan if none did)."""
        return self.accuracy_sum / self.met_slo if self.met_slo else float("nan")

    @property
    def mean_batch(self) -> float:
        served = self.met_slo + self.served_late
        return served / self.batches if self.batches else 0.0

    @property
    def throughput(self) -> float:
        """Queries served (in time or late) per second of trace."""
        return (self.met_slo + self.served_late) / self.duration_s if self.duration_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "workers": self.num_workers, "queries": self.queries,
            "slo_attainment": self.slo_attainment, "mean_accuracy": self.mean_accuracy,
            "met_slo": self.met_slo, "served_late": self.served_late, "dropped": self.dropped,
            "rejected": self.rejected, "unserved": self.unserved, "retried": self.retried,
            "mean_batch": self.mean_batch, "throughput": self.throughput,
            "subnet_queries": dict(self.subnet_queries),
        }


def simulate(
    trace: Trace | Sequence[float] | np.ndarray,
    policy: Policy,
    num_workers: int = 8,
    slo_ms: float | Sequence[float] | np.ndarray = 36.0,
    *,
    late: str = "drop",
    max_queue: int | None = None,
    overhead_ms: float = 0.0,
    query_cost_ms: float = 0.0,
    worker_failures: Sequence[float] = (),
) -> SimulationResult:
    """Replay ``trace`` through ``num_workers`` simulated workers scheduled by ``policy``.

    Args:
        trace: arrival times (s).
        policy: a policy bound to the profile to simulate.
        num_workers: workers (one per device in the live system).
        slo_ms: latency SLO per query (scalar or one per arrival); deadline = arrival + SLO.
        late: ``"drop"`` answers a head query whose slack is below the policy's fastest option at once
            (a deadline miss that frees the worker); ``"serve"`` lets the policy serve it best effort.
        max_queue: bound on queued queries; arrivals beyond it are rejected (``None``: unbounded).
        overhead_ms: dispatch overhead added to every batch (and seen by the policy as less slack).
        query_cost_ms: handling time per query outside the forward pass, spent by the worker serving it
            (a CPU server, where handling and forward share the cores); the policy sees it as
            :attr:`QueueState.query_cost_ms`.
        worker_failures: times (s) at which one worker dies; its in-flight batch is re-queued.
    """
    if late not in ("drop", "serve"):
        raise ValueError(f"simulate: late must be 'drop' or 'serve', got {late!r}")
    if num_workers < 1:
        raise ValueError(f"simulate: num_workers must be >= 1, got {num_workers}")
    if max_queue is not None and max_queue < 1:
        raise ValueError(f"simulate: max_queue must be >= 1 or None, got {max_queue}")
    if overhead_ms < 0:
        raise ValueError(f"simulate: overhead_ms must be >= 0, got {overhead_ms}")
    if not query_cost_ms >= 0:
        raise ValueError(f"simulate: query_cost_ms must be >= 0, got {query_cost_ms}")
    arrivals = trace.arrivals if isinstance(trace, Trace) else np.asarray(trace, dtype=np.float64)
    if arrivals.size and np.any(np.diff(arrivals) < 0):
        raise ValueError("simulate: arrival times must be sorted")
    slo = np.broadcast_to(np.asarray(slo_ms, dtype=np.float64), arrivals.shape) / 1e3
    if np.any(slo <= 0):
        raise ValueError("simulate: slo_ms must be > 0")
    deadlines = (arrivals + slo).tolist()
    times = arrivals.tolist()
    profile = policy.profile
    latency_s = [[v / 1e3 for v in row] for row in profile.latency_ms]
    accuracy = profile.accuracies
    overhead = overhead_ms / 1e3
    query_cost = query_cost_ms / 1e3
    fastest = policy.fastest_ms() / 1e3
    failures = sorted(worker_failures)

    n = len(times)
    queue: list[tuple[float, int]] = []  # (deadline, query index)
    idle = num_workers
    running: list[tuple[float, int, int, tuple[int, ...]]] = []  # (finish, batch id, subnet, queries)
    batch_ids = 0
    met = late_served = dropped = rejected = retried = batches = 0
    acc_sum = busy = 0.0
    per_subnet: Counter = Counter()
    i = f = 0
    now = 0.0
    alive = num_workers
    decide, push, pop = policy.decide, heapq.heappush, heapq.heappop

    while True:
        # dispatch while a worker is idle and queries wait
        while idle and queue:
            if late == "drop":
                while queue and queue[0][0] - now - overhead < fastest:
                    pop(queue)
                    dropped += 1
                if not queue:
                    break
            d = decide(QueueState(now + overhead, queue[0][0], len(queue), alive, query_cost_ms))
            members = tuple(pop(queue)[1] for _ in range(min(d.batch_size, len(queue))))
            finish = now + overhead + latency_s[d.subnet][len(members) - 1] + query_cost * len(members)
            push(running, (finish, batch_ids, d.subnet, members))
            batch_ids += 1
            idle -= 1
        t_arrival = times[i] if i < n else float("inf")
        t_finish = running[0][0] if running else float("inf")
        t_fail = failures[f] if f < len(failures) else float("inf")
        now = min(t_arrival, t_finish, t_fail)
        if now == float("inf"):
            break
        if t_finish == now:
            finish, _, s, members = pop(running)
            batches += 1
            busy += latency_s[s][len(members) - 1] + overhead + query_cost * len(members)
            per_subnet[s] += len(members)
            for q in members:
                if finish <= deadlines[q]:
                    met += 1
                    acc_sum += accuracy[s]
                else:
                    late_served += 1
            idle += 1
        elif t_fail == now:
            f += 1
            if alive == 0:
                continue
            alive -= 1
            if running:  # the busiest worker dies: its batch is retried
                last = max(range(len(running)), key=lambda k: running[k][0])
                _, _, _, members = running.pop(last)
                heapq.heapify(running)
                for q in members:
                    push(queue, (deadlines[q], q))
                retried += len(members)
            else:
                idle -= 1
        else:
            if max_queue is not None and len(queue) >= max_queue:
                rejected += 1
            else:
                push(queue, (deadlines[i], i))
            i += 1
        if alive == 0 and not running:
            break
    unserved = len(queue) + sum(len(r[3]) for r in running)
    if alive == 0:
        unserved += n - i
    duration = float(trace.duration) if isinstance(trace, Trace) else (float(arrivals[-1]) if n else 0.0)
    return SimulationResult(
        policy.describe(), num_workers, n, met, late_served, dropped, rejected, unserved, acc_sum, batches,
        busy, duration, Counter({profile.subnet_ids[s]: c for s, c in per_subnet.items()}), retried,
    )

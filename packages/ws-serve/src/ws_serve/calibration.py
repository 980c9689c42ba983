"""Calibrate a live ``ws-serve`` process and replay traces against it: the serving half of an experiment.

A script, benchmark or pipeline that has a checkpoint with its served set (:func:`ws_serve.deploy.save_served_set`)
uses these to pick a load that means something on *this* machine and to compare policies on one trace:

* :func:`ws_serve_process` — ``ws-serve run`` for a checkpoint and policy on a free loopback port
  (:func:`ws_serve.launch.server_endpoints`), for the length of a ``with`` block;
* :func:`measure_overhead` — per-request latency outside the forward pass, measured end to end;
* :func:`measure_capacity` — the highest steady rate a server sustains within an SLO;
* :func:`estimate_query_cost` — the server time per query outside the forward pass, from a capacity;
* :func:`served_rate_ratio` — how much faster the fastest served SubNet drains queries than the most
  accurate one once that time is counted: the room a policy has to trade accuracy for throughput;
* :func:`choose_load` — the baseline SubNet, the SLO and the trace's mean rate from a profile;
* :func:`serve_and_replay` — serve with one policy, warm up, replay a trace open loop
  (:func:`ws_serve.loadgen.replay_sync`).

Each takes the ``transport`` the load generator uses (``"http"`` or ``"grpc"``,
:data:`ws_serve.loadgen.TRANSPORTS`); the address it takes is what :func:`ws_serve_process` yields for
that transport.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["BASELINES", "choose_load", "estimate_query_cost", "measure_capacity", "measure_overhead",
           "serve_and_replay", "served_rate_ratio", "ws_serve_process"]

#: how a fixed-SubNet baseline is named besides a SubNet id: the most accurate, the median, the cheapest
BASELINES = ("max", "median", "min")


def choose_load(
    profile, baseline: str = "max", load: float = 0.7, slo_ms: float | None = None, overhead_ms: float = 0.0,
    capacity_qps: float | None = None,
) -> tuple[int, float, float]:
    """``(baseline SubNet index, SLO in ms, mean arrival rate in q/s)`` from a measured profile.

    ``overhead_ms`` is the per-request latency outside the forward pass (HTTP, serialisation) of an
    idle server (:func:`measure_overhead`). The SLO defaults to 4 × the baseline SubNet's batch-1
    latency including that overhead. The rate is ``load`` × the baseline's throughput: measured end
    to end if ``capacity_qps`` is given (:func:`measure_capacity`: the steady rate it sustains within
    the SLO), else estimated as the peak of
    ``b / (L(b) + b · overhead)`` over the batch sizes ``b`` whose latency fits in half the SLO — so
    the fixed baseline keeps up on average and misses the SLO only in bursts.
    """
    if overhead_ms < 0:
        raise ValueError(f"overhead_ms must be >= 0, got {overhead_ms}")
    n = profile.num_subnets
    if baseline == "max":
        index = n - 1
    elif baseline == "min":
        index = 0
    elif baseline == "median":
        index = n // 2
    else:
        index = profile.index(baseline)
    if slo_ms is None:
        slo_ms = 4 * (profile.latency(index, 1) + overhead_ms)
    fits = [b for b in range(1, profile.max_batch + 1)
            if profile.latency(index, b) + overhead_ms <= slo_ms / 2] or [1]
    peak = max(1000 * b / (profile.latency(index, b) + b * overhead_ms) for b in fits)
    if capacity_qps is not None:
        if not capacity_qps > 0:
            raise ValueError(f"capacity_qps must be > 0, got {capacity_qps}")
        peak = capacity_qps
    return index, float(slo_ms), float(load * peak)


def estimate_query_cost(profile, index: int, capacity_qps: float) -> float:
    """Time per query, in ms, that a server spends outside the forward pass, from its capacity.

    ``capacity_qps`` is the steady rate the server sustains serving profile SubNet ``index``
    (:func:`measure_capacity`). At that rate each query costs ``1000 / capacity_qps`` ms of the
    machine; the forward's share of it is at least ``min_b L(index, b) / b`` (batching amortises the
    forward, never the per-query work), so the rest, ``1000 / capacity_qps - min_b L(index, b) / b``
    (at least 0), is what decoding, replying and the transport cost per query. On a CPU server this
    work shares the cores with the forward; ``ws-serve run --query-cost-ms`` tells SlackFit about it.

    Example::

        >>> from ws_serve.profile import Profile
        >>> p = Profile(("a",), (0.8,), ((1.0, 1.2, 1.5, 2.0),))
        >>> round(estimate_query_cost(p, 0, capacity_qps=800.0), 6)  # 1.25 ms - 2.0 / 4 ms
        0.75
    """
    if not capacity_qps > 0:
        raise ValueError(f"estimate_query_cost: capacity_qps must be > 0, got {capacity_qps}")
    per_sample = min(profile.latency(index, b) / b for b in range(1, profile.max_batch + 1))
    return max(0.0, 1000.0 / capacity_qps - per_sample)


def served_rate_ratio(profile, query_cost_ms: float = 0.0, batch: int | None = None) -> float:
    """How many times faster the profile's fastest SubNet serves queries than its most accurate one, per
    query at batch ``batch`` (default: the largest profiled), when each query also costs
    ``query_cost_ms`` outside the forward pass (:func:`estimate_query_cost`):
    ``(c + L(most accurate, b) / b) / (c + min_s L(s, b) / b)``.

    It is about what trading accuracy for speed can buy under load: a policy that serves a backlog
    with cheaper SubNets (SlackFit) drains it at most about this many times faster than the most
    accurate SubNet fixed (about: on a CPU server the handling and the forward partly overlap on the
    cores). SuperServe's profile (:func:`~ws_serve.profile.superserve_paper_profile`, no per-query
    cost) gives 40 / 10.7 = 3.7 at batch 16; a per-query cost several times the forward brings it
    near 1.

    Example::

        >>> from ws_serve.profile import Profile
        >>> p = Profile(("a", "b"), (0.7, 0.8), ((1.0, 1.2), (3.0, 4.0)))
        >>> round(served_rate_ratio(p), 4)  # batch 2: 2.0 vs 0.6 ms per query
        3.3333
        >>> round(served_rate_ratio(p, query_cost_ms=1.4), 4)  # (1.4 + 2.0) / (1.4 + 0.6)
        1.7
    """
    if not (math.isfinite(query_cost_ms) and query_cost_ms >= 0):
        raise ValueError(f"served_rate_ratio: query_cost_ms must be a finite number >= 0, got {query_cost_ms!r}")
    b = profile.max_batch if batch is None else batch
    if not 1 <= b <= profile.max_batch:
        raise ValueError(f"served_rate_ratio: batch must be in [1, {profile.max_batch}], got {b}")
    most_accurate = max(range(profile.num_subnets), key=lambda s: (profile.accuracies[s], -profile.latency(s, b)))
    fastest = min(profile.latency(s, b) for s in range(profile.num_subnets))
    return (query_cost_ms + profile.latency(most_accurate, b) / b) / (query_cost_ms + fastest / b)


def _check_transport(transport: str) -> None:
    from .loadgen import TRANSPORTS

    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")


@contextmanager
def ws_serve_process(checkpoint: Path, policy: str, *, log: Path, max_batch: int = 8, workers: int = 1,
                     overhead_ms: float = 1.0, query_cost_ms: float = 0.0, start_timeout_s: float = 300.0,
                     extra_args: Sequence[str] = (), transport: str = "http") -> Iterator[str]:
    """Run ``ws-serve run`` for ``checkpoint`` with ``policy`` on free loopback ports until the block
    ends (then SIGTERM: the server answers what it accepted and exits); yields, once it is ready, its
    HTTP base URL (``transport="http"``) or its gRPC ``host:port`` (``"grpc"``: the server also listens
    on gRPC) (:func:`ws_serve.launch.server_endpoints`)."""
    from .launch import server_endpoints

    _check_transport(transport)
    args = ["--checkpoint", str(checkpoint), "--policy", policy, "--max-batch", str(max_batch), "--workers",
            str(workers), "--max-queue", "4096", "--overhead-ms", f"{overhead_ms:.3f}",
            "--query-cost-ms", f"{query_cost_ms:.4f}", *extra_args]
    if transport == "grpc" and "--grpc-port" not in args:
        args += ["--grpc-port", "0"]
    with server_endpoints(args, log, start_timeout_s=start_timeout_s) as ends:
        yield ends.grpc if transport == "grpc" else ends.http


def measure_overhead(url: str, model: str, sample_shape: Sequence[int], forward_ms: float, requests: int = 48,
                     spacing_s: float = 0.002, transport: str = "http") -> float:
    """Per-request cost outside the forward pass, in ms: the median client-measured latency of
    ``requests`` requests sent ``spacing_s`` apart (the first quarter discarded as warm-up) minus
    ``forward_ms``, the profiled batch-1 forward latency of the SubNet that serves them.

    The default spacing (2 ms) is longer than one request takes, so requests do not queue, but short
    enough that the server stays warm, as it is under load: with requests 100 ms apart the server's
    threads and the CPU go idle between them and every request pays a wake-up of a few milliseconds
    that a loaded server never pays.
    """
    from .loadgen import replay_sync

    _check_transport(transport)
    report = replay_sync(url, model, [spacing_s * i for i in range(requests)], slo_ms=60_000.0,
                         sample_shape=tuple(sample_shape), transport=transport)
    if report.ok < requests:
        raise RuntimeError(f"measure_overhead: only {report.ok} of {requests} requests succeeded "
                           f"({dict(report.statuses)})")
    measured = sorted(r.latency_ms for r in report.records if r.at_s >= spacing_s * (requests // 4))
    return max(0.0, measured[len(measured) // 2] - forward_ms)


def measure_capacity(url: str, model: str, sample_shape: Sequence[int], slo_ms: float, start_qps: float, *,
                     probe_s: float = 3.0, target: float = 0.95, step: float = 1.25, max_probes: int = 8,
                     transport: str = "http") -> float:
    """The highest steady arrival rate (q/s) a server sustains with ``target`` SLO attainment.

    Steady open-loop streams of ``probe_s`` seconds are replayed, starting at ``start_qps``: while a
    rate meets ``target`` the next probe is ``step`` times faster, while it misses, ``step`` times
    slower; the search stops at the first change of direction (or after ``max_probes`` probes) and
    returns the highest rate that met the target (the lowest tried if none did). Measured end to end
    on this machine, so request handling, batching and the client's own work are all included.
    """
    from .loadgen import replay_sync

    _check_transport(transport)
    if not (start_qps > 0 and step > 1 and 0 < target <= 1 and probe_s > 0 and max_probes >= 1):
        raise ValueError(f"measure_capacity: need start_qps > 0, step > 1, 0 < target <= 1, probe_s > 0, "
                         f"max_probes >= 1; got {start_qps}, {step}, {target}, {probe_s}, {max_probes}")
    rate, best, lowest, direction = start_qps, None, start_qps, 0
    for _ in range(max_probes):
        arrivals = [i / rate for i in range(max(1, int(rate * probe_s)))]
        report = replay_sync(url, model, arrivals, slo_ms=slo_ms, sample_shape=tuple(sample_shape),
                             transport=transport)
        time.sleep(0.5)  # let the queue drain before the next probe
        lowest = min(lowest, rate)
        met = report.slo_attainment >= target
        if met:
            best = rate if best is None else max(best, rate)
        if direction and met != (direction > 0):
            break  # passed after failing, or failed after passing: the capacity lies in between
        direction = 1 if met else -1
        rate = rate * step if met else rate / step
    return best if best is not None else lowest


def serve_and_replay(checkpoint: Path, policy: str, trace, slo_ms: float, *, log: Path, model: str,
                     sample_shape: Sequence[int], max_batch: int = 8, workers: int = 1, overhead_ms: float = 1.0,
                     query_cost_ms: float = 0.0, seed: int = 0, warmup: int = 16, extra_args: Sequence[str] = (),
                     transport: str = "http"):
    """Serve ``checkpoint`` with ``policy`` (:func:`ws_serve_process`), send ``warmup`` unmeasured
    requests, then replay ``trace`` open loop (one KServe v2 request per arrival over ``transport``,
    SLO ``slo_ms``); the client's :class:`ws_serve.ReplayReport`."""
    from .loadgen import replay_sync

    with ws_serve_process(checkpoint, policy, log=log, max_batch=max_batch, workers=workers,
                          overhead_ms=overhead_ms, query_cost_ms=query_cost_ms, extra_args=extra_args,
                          transport=transport) as url:
        replay_sync(url, model, [0.02 * i for i in range(warmup)], slo_ms=slo_ms, sample_shape=tuple(sample_shape),
                    seed=seed, transport=transport)
        return replay_sync(url, model, trace, slo_ms=slo_ms, sample_shape=tuple(sample_shape), seed=seed,
                           transport=transport)

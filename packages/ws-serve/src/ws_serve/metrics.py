"""Prometheus metrics of a ws-serve server (``GET /metrics``), in a registry owned by the server.

=====================================  =========  ==================================================
metric                                 type       meaning
=====================================  =========  ==================================================
``ws_serve_queue_length``              gauge      queries waiting in the global EDF queue
``ws_serve_workers_alive``             gauge      workers serving
``ws_serve_requests_total{outcome}``   counter    finished requests: ``ok`` (within SLO), ``late``,
                                                  ``deadline_exceeded``, ``overloaded``, ``worker_failed``,
                                                  ``error``, ``shutdown``
``ws_serve_slo_attainment``            gauge      ``ok`` / all finished requests (rejections included)
``ws_serve_mean_served_accuracy``      gauge      mean profiled accuracy of SubNets serving ``ok``
                                                  requests
``ws_serve_subnet_requests_total``     counter    requests served per SubNet id
``ws_serve_request_latency_seconds``   histogram  arrival to response, served requests
``ws_serve_queue_time_seconds``        histogram  arrival to dispatch, served requests
``ws_serve_inference_seconds{subnet}`` histogram  batch forward time per SubNet
``ws_serve_batch_size``                histogram  queries per dispatched batch
``ws_serve_request_overhead_seconds``  histogram  served requests: receive to respond minus queueing
``{transport}``                                   and the batch's run on its worker (``http``, ``grpc``)
=====================================  =========  ==================================================

The queueing and forward parts of a request are ``ws_serve_queue_time_seconds`` and
``ws_serve_inference_seconds``; each response also carries its own ``queue_ms``, ``compute_ms`` and
``overhead_ms``.

:meth:`ServeMetrics.statistics` holds the same requests as the cumulative counters of the KServe v2 /
Triton statistics extension (``GET /v2/models/{name}/stats``, gRPC ``ModelStatistics``):

* ``success`` / ``fail``: inference requests for the model answered with a result / with an error (bad
  input, full queue, missed deadline, ...), each with its duration from arrival to the answer;
* ``queue``: arrival to dispatch, and ``compute_infer``: the run of the batch it was part of, per
  successful request (Triton's definitions); ``compute_input`` / ``compute_output`` are not measured
  apart (they are part of ``overhead_ms``) and stay at zero, as do ``cache_hit`` / ``cache_miss``;
* ``inference_count``: samples of the successful requests (a request of batch 8 counts 8);
  ``execution_count``: batches the workers ran; ``batch_stats``: those batches by size, with their
  forward time; ``last_inference``: milliseconds since the epoch of the last successful request.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["INFER_STATISTICS", "OUTCOMES", "ServeMetrics"]

INFER_STATISTICS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit",
                    "cache_miss")
OUTCOMES = ("ok", "late", "deadline_exceeded", "overloaded", "worker_failed", "error", "shutdown")
_OVERHEAD_BUCKETS = (5e-5, 1e-4, 2e-4, 3e-4, 4e-4, 5e-4, 7.5e-4, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025,
                     0.05, 0.1)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.036, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServeMetrics:
    """The server's Prometheus collectors (a private :class:`CollectorRegistry` unless one is given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.queue_length = Gauge("ws_serve_queue_length", "Queries waiting in the global EDF queue", registry=r)
        self.workers_alive = Gauge("ws_serve_workers_alive", "Workers serving", registry=r)
        self.requests = Counter("ws_serve_requests", "Finished requests by outcome", ["outcome"], registry=r)
        self.slo_attainment = Gauge("ws_serve_slo_attainment",
                                    "Requests finished within their SLO / all finished requests", registry=r)
        self.mean_accuracy = Gauge("ws_serve_mean_served_accuracy",
                                   "Mean profiled accuracy of the SubNets serving requests within SLO", registry=r)
        self.subnet_requests = Counter("ws_serve_subnet_requests", "Requests served per SubNet", ["subnet"],
                                       registry=r)
        self.latency = Histogram("ws_serve_request_latency_seconds", "Arrival to response of served requests",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram("ws_serve_queue_time_seconds", "Arrival to dispatch of served requests",
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("ws_serve_inference_seconds", "Batch forward time per SubNet", ["subnet"],
                                   buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("ws_serve_batch_size", "Queries per dispatched batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.overhead = Histogram("ws_serve_request_overhead_seconds",
                                  "Receive to respond minus queueing and the forward, served requests",
                                  ["transport"], buckets=_OVERHEAD_BUCKETS, registry=r)
        for outcome in OUTCOMES:
            self.requests.labels(outcome)
        self._lock = threading.Lock()
        self._finished = self._ok = 0
        self._accuracy_sum = 0.0
        # the statistics extension's counters: [count, ns] per duration, and per batch size
        self._durations = {k: [0, 0] for k in INFER_STATISTICS}
        self._batches: dict[int, list[int]] = {}
        self._inference_count = self._execution_count = self._last_inference_ms = 0

    def finished(self, outcome: str, n: int = 1, accuracy: float | None = None) -> None:
        """Count ``n`` finished requests with ``outcome`` (``accuracy`` of the SubNet for ``ok``)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; allowed {OUTCOMES}")
        self.requests.labels(outcome).inc(n)
        with self._lock:
            self._finished += n
            if outcome == "ok":
                self._ok += n
                if accuracy is not None:
                    self._accuracy_sum += accuracy * n
                    self.mean_accuracy.set(self._accuracy_sum / self._ok)
            self.slo_attainment.set(self._ok / self._finished)

    def served(self, subnet: str, latency_s: float, queue_s: float) -> None:
        self.subnet_requests.labels(subnet).inc()
        self.latency.observe(latency_s)
        self.queue_time.observe(queue_s)

    def batch(self, subnet: str, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.labels(subnet).observe(seconds)
        with self._lock:
            self._execution_count += 1
            counts = self._batches.setdefault(int(size), [0, 0])
            counts[0] += 1
            counts[1] += _ns(seconds)

    def request_overhead(self, transport: str, seconds: float) -> None:
        self.overhead.labels(transport).observe(seconds)

    def request_succeeded(self, samples: int, seconds: float, queue_s: float, compute_s: float) -> None:
        """Count a request answered with a result: ``samples`` inferences, ``seconds`` from arrival to the
        answer, of which ``queue_s`` waiting for dispatch and ``compute_s`` the run of its batch."""
        with self._lock:
            self._inference_count += int(samples)
            self._last_inference_ms = time.time_ns() // 1_000_000
            for key, value in (("success", seconds), ("queue", queue_s), ("compute_infer", compute_s)):
                self._durations[key][0] += 1
                self._durations[key][1] += _ns(value)

    def request_failed(self, seconds: float) -> None:
        """Count an inference request for the model answered with an error, ``seconds`` after it arrived."""
        with self._lock:
            self._durations["fail"][0] += 1
            self._durations["fail"][1] += _ns(seconds)

    def statistics(self) -> dict[str, Any]:
        """The statistics extension's counters (see the module docstring), in Triton's JSON form without
        the model's ``name`` and ``version``."""
        def duration(counts: list[int]) -> dict[str, int]:
            return {"count": counts[0], "ns": counts[1]}

        zero = [0, 0]
        with self._lock:
            return {
                "last_inference": self._last_inference_ms,
                "inference_count": self._inference_count,
                "execution_count": self._execution_count,
                "inference_stats": {k: duration(v) for k, v in self._durations.items()},
                "batch_stats": [{"batch_size": b, "compute_input": duration(zero), "compute_infer": duration(c),
                                 "compute_output": duration(zero)} for b, c in sorted(self._batches.items())],
                "memory_usage": [],
            }

    def render(self) -> bytes:
        """The exposition text (``text/plain; version=0.0.4``)."""
        return generate_latest(self.registry)


def _ns(seconds: float) -> int:
    return max(0, round(seconds * 1e9))

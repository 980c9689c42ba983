"""Open-loop load generator: replay a trace against a live KServe v2 server.

Each arrival of the trace is sent at its time — whether or not earlier requests have been answered
(open loop, as in SuperServe's evaluation) — as one ``/v2/models/{name}/infer`` request carrying one
query (binary tensor data, like tritonclient). The report gives the SLO attainment (answered with
200 within the SLO, measured at the client, over all sent), the mean served accuracy (the
``accuracy`` the server reports for the SubNet that served each SLO-meeting request), throughput,
and the count of every error status.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from .traces import Trace

__all__ = ["ReplayReport", "RequestRecord", "encode_infer_request", "replay", "replay_sync"]


def encode_infer_request(x: np.ndarray, slo_ms: float | None = None, input_name: str = "input") -> tuple[bytes, int]:
    """A v2 infer body with binary tensor data; returns ``(body, json header length)``."""
    x = np.ascontiguousarray(x, dtype="<f4")
    params: dict[str, Any] = {"binary_data_output": True}
    if slo_ms is not None:
        params["slo_ms"] = slo_ms
    head = json.dumps({"inputs": [{"name": input_name, "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": params}).encode()
    return head + x.tobytes(), len(head)


@dataclass(frozen=True)
class RequestRecord:
    """One replayed request: when it was due (seconds from the start of the trace) and how it ended.

    ``status`` is the HTTP status code or, for a transport failure, the exception's class name;
    ``latency_ms`` is measured at the client (``nan`` without a response); ``accuracy`` and ``subnet_id``
    are what the server reported for a 200 (``nan`` / ``""`` otherwise).
    """

    at_s: float
    status: int | str
    latency_ms: float = float("nan")
    accuracy: float = float("nan")
    subnet_id: str = ""

    def met(self, slo_ms: float) -> bool:
        return self.status == 200 and self.latency_ms <= slo_ms


@dataclass
class ReplayReport:
    """Outcome of :func:`replay` (client-side measurements)."""

    sent: int
    met_slo: int
    ok: int
    accuracy_sum: float
    duration_s: float
    statuses: Counter = field(default_factory=Counter)
    subnets: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    send_lag_ms: list[float] = field(default_factory=list, repr=False)
    records: list[RequestRecord] = field(default_factory=list, repr=False)
    slo_ms: float = float("nan")

    @property
    def slo_attainment(self) -> float:
        return self.met_slo / self.sent if self.sent else 1.0

    @property
    def mean_accuracy(self) -> float:
        return self.accuracy_sum / self.met_slo if self.met_slo else float("nan")

    @property
    def throughput(self) -> float:
        """Successful responses per second of wall time."""
        return self.ok / self.duration_s if self.duration_s else 0.0

    def latency_percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def timeline(self, bin_s: float = 1.0) -> dict[str, list[float]]:
        """Per time bin of ``bin_s`` seconds (by when requests were due): requests sent, SLO attainment
        (met / sent; ``nan`` for an empty bin) and mean served accuracy of the SLO-meeting requests
        (``nan`` where none met the SLO)."""
        if not bin_s > 0:
            raise ValueError(f"timeline: bin_s must be > 0, got {bin_s}")
        bins = int(max((r.at_s for r in self.records), default=0.0) // bin_s) + 1 if self.records else 0
        sent, met, acc = np.zeros(bins), np.zeros(bins), np.zeros(bins)
        for r in self.records:
            i = int(r.at_s // bin_s)
            sent[i] += 1
            if r.met(self.slo_ms):
                met[i] += 1
                acc[i] += r.accuracy
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"t_s": (np.arange(bins) * bin_s).tolist(), "sent": sent.tolist(),
                    "slo_attainment": np.where(sent > 0, met / sent, np.nan).tolist(),
                    "accuracy": np.where(met > 0, acc / met, np.nan).tolist()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent, "slo_ms": self.slo_ms, "ok": self.ok, "met_slo": self.met_slo,
            "slo_attainment": self.slo_attainment,
            "mean_accuracy": self.mean_accuracy, "throughput": self.throughput, "duration_s": self.duration_s,
            "p50_ms": self.latency_percentile(50), "p99_ms": self.latency_percentile(99),
            "max_send_lag_ms": max(self.send_lag_ms, default=0.0),
            "statuses": {str(k): v for k, v in self.statuses.items()}, "subnets": dict(self.subnets),
        }


async def replay(
    url: str,
    model: str,
    trace: Trace | Sequence[float],
    *,
    slo_ms: float = 100.0,
    sample_shape: Sequence[int] = (3, 32, 32),
    seed: int = 0,
    timeout_s: float = 30.0,
    max_connections: int = 512,
) -> ReplayReport:
    """Send one request per arrival of ``trace`` to ``{url}/v2/models/{model}/infer`` (open loop)."""
    if slo_ms <= 0:
        raise ValueError(f"replay: slo_ms must be > 0, got {slo_ms}")
    arrivals = trace.arrivals if isinstance(trace, Trace) else np.asarray(trace, dtype=np.float64)
    x = np.random.default_rng(seed).standard_normal((1, *sample_shape)).astype(np.float32)
    body, header_length = encode_infer_request(x, slo_ms)
    headers = {"Inference-Header-Content-Length": str(header_length), "Content-Type": "application/octet-stream"}
    report = ReplayReport(len(arrivals), 0, 0, 0.0, 0.0, slo_ms=float(slo_ms))
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    path = f"/v2/models/{model}/infer"

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout_s) as client:
        async def one(at: float) -> None:
            start = time.perf_counter()
            try:
                r = await client.post(path, content=body, headers=headers)
            except httpx.HTTPError as e:
                report.statuses[type(e).__name__] += 1
                report.records.append(RequestRecord(at, type(e).__name__))
                return
            latency = (time.perf_counter() - start) * 1e3
            report.statuses[r.status_code] += 1
            if r.status_code != 200:
                report.records.append(RequestRecord(at, r.status_code, latency))
                return
            report.ok += 1
            report.latencies_ms.append(latency)
            hl = r.headers.get("inference-header-content-length")
            meta = json.loads(r.content[: int(hl)] if hl is not None else r.content)
            params = meta.get("parameters", {})
            subnet, accuracy = str(params.get("subnet_id", "?")), float(params.get("accuracy", float("nan")))
            report.subnets[subnet] += 1
            report.records.append(RequestRecord(at, 200, latency, accuracy, subnet))
            if latency <= slo_ms:
                report.met_slo += 1
                report.accuracy_sum += accuracy

        t0 = time.perf_counter()
        tasks = []
        for at in arrivals.tolist():
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            report.send_lag_ms.append(max(0.0, -delay) * 1e3)
            tasks.append(asyncio.create_task(one(at)))
        if tasks:
            await asyncio.gather(*tasks)
        report.duration_s = time.perf_counter() - t0
    return report


def replay_sync(url: str, model: str, trace: Trace | Sequence[float], **kwargs: Any) -> ReplayReport:
    """:func:`replay` from synchronous code."""
    return asyncio.run(replay(url, model, trace, **kwargs))

"""Open-loop load generator: replay a trace against a live KServe v2 server, over HTTP or gRPC.

Each arrival of the trace is sent at its time — whether or not earlier requests have been answered
(open loop, as in SuperServe's evaluation) — as one inference request carrying one query:

* ``transport="http"`` — ``POST {url}/v2/models/{name}/infer`` with binary tensor data (as
  tritonclient's HTTP client sends it), through one ``httpx.AsyncClient``;
* ``transport="grpc"`` — ``inference.GRPCInferenceService/ModelInfer`` on ``host:port`` with
  ``raw_input_contents``, through one grpc.aio channel. The request is serialised once and the same
  bytes sent for every arrival, so the client's own cost per request is grpc.aio's per-call cost
  (measured on a 2-core x86-64 VM: 0.4–0.5 ms of CPU per request, against 1.3 ms for the HTTP path;
  ``benchmarks/serve_request_cost.py``): on a machine where the load generator shares the cores with
  the server, this is the transport that leaves the most CPU to the server.

The report gives the SLO attainment (answered successfully within the SLO, measured at the client,
over all sent), the mean served accuracy (the ``accuracy`` the server reports for the SubNet that
served each SLO-meeting request), throughput, and the count of every status (HTTP codes, or gRPC
status names).
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

__all__ = [
    "TRANSPORTS",
    "ReplayReport",
    "RequestRecord",
    "encode_grpc_infer_request",
    "encode_infer_request",
    "replay",
    "replay_sync",
]

#: how :func:`replay` reaches the server
TRANSPORTS = ("http", "grpc")


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


def encode_grpc_infer_request(model: str, x: np.ndarray, slo_ms: float | None = None,
                              input_name: str = "input") -> bytes:
    """A serialised ``ModelInferRequest`` for ``model`` with ``x`` as ``raw_input_contents`` (FP32)."""
    from tritonclient.grpc import service_pb2 as pb

    x = np.ascontiguousarray(x, dtype="<f4")
    request = pb.ModelInferRequest(
        model_name=model, inputs=[pb.ModelInferRequest.InferInputTensor(name=input_name, datatype="FP32",
                                                                         shape=list(x.shape))],
        raw_input_contents=[x.tobytes()])
    if slo_ms is not None:
        request.parameters["slo_ms"].double_param = float(slo_ms)
    return request.SerializeToString()


@dataclass(frozen=True)
class RequestRecord:
    """One replayed request: when it was due (seconds from the start of the trace) and how it ended.

    ``status`` is the HTTP status code, the gRPC status name (``"OK"``, ``"DEADLINE_EXCEEDED"``, ...)
    or, for an HTTP transport failure, the exception's class name; ``latency_ms`` is measured at the
    client (``nan`` without a response); ``accuracy`` and ``subnet_id`` are what the server reported
    for a success (``nan`` / ``""`` otherwise).
    """

    at_s: float
    status: int | str
    latency_ms: float = float("nan")
    accuracy: float = float("nan")
    subnet_id: str = ""

    @property
    def ok(self) -> bool:
        """Answered successfully (HTTP 200, gRPC OK)."""
        return self.status == 200 or self.status == "OK"

    def met(self, slo_ms: float) -> bool:
        return self.ok and self.latency_ms <= slo_ms


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
    transport: str = "http",
    grpc_deadline: bool = True,
) -> ReplayReport:
    """Send one request per arrival of ``trace`` to the server at ``url`` (open loop).

    ``url`` is the HTTP base URL (``transport="http"``: ``{url}/v2/models/{model}/infer``) or the gRPC
    ``host:port`` (``transport="grpc"``). ``max_connections`` bounds HTTP connections (gRPC multiplexes
    every call on one channel). Over gRPC each call carries ``slo_ms`` as its deadline
    (``grpc_deadline=True``), as a deadline-aware client does: the server then counts the time the request
    spent before its handler ran, and an answer later than the SLO is cancelled and recorded as
    ``DEADLINE_EXCEEDED`` (a miss either way); ``False`` keeps ``timeout_s`` as the deadline and records
    late answers with their latency.
    """
    if slo_ms <= 0:
        raise ValueError(f"replay: slo_ms must be > 0, got {slo_ms}")
    if transport not in TRANSPORTS:
        raise ValueError(f"replay: transport must be one of {TRANSPORTS}, got {transport!r}")
    arrivals = trace.arrivals if isinstance(trace, Trace) else np.asarray(trace, dtype=np.float64)
    x = np.random.default_rng(seed).standard_normal((1, *sample_shape)).astype(np.float32)
    report = ReplayReport(len(arrivals), 0, 0, 0.0, 0.0, slo_ms=float(slo_ms))

    def record(at: float, status: int | str, latency: float, params: dict[str, Any] | None) -> None:
        report.statuses[status] += 1
        if params is None:  # no response, or an error response
            report.records.append(RequestRecord(at, status, latency))
            return
        report.ok += 1
        report.latencies_ms.append(latency)
        subnet, accuracy = str(params.get("subnet_id", "?")), float(params.get("accuracy", float("nan")))
        report.subnets[subnet] += 1
        report.records.append(RequestRecord(at, status, latency, accuracy, subnet))
        if latency <= slo_ms:
            report.met_slo += 1
            report.accuracy_sum += accuracy

    async def run(one) -> None:
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

    if transport == "grpc":
        import grpc
        from tritonclient.grpc import service_pb2 as pb

        body = encode_grpc_infer_request(model, x, slo_ms)
        rpc_timeout_s = min(timeout_s, slo_ms / 1e3) if grpc_deadline else timeout_s
        async with grpc.aio.insecure_channel(url) as channel:
            # the request is already serialised: send its bytes as they are, parse only the response
            infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                        request_serializer=None, response_deserializer=pb.ModelInferResponse.FromString)

            async def one_grpc(at: float) -> None:
                start = time.perf_counter()
                try:
                    response = await infer(body, timeout=rpc_timeout_s)
                except grpc.aio.AioRpcError as e:
                    record(at, e.code().name, (time.perf_counter() - start) * 1e3, None)
                    return
                latency = (time.perf_counter() - start) * 1e3
                params = {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in response.parameters.items()
                          if k in ("subnet_id", "accuracy") and v.WhichOneof("parameter_choice")}
                record(at, "OK", latency, params)

            await run(one_grpc)
        return report

    body, header_length = encode_infer_request(x, slo_ms)
    headers = {"Inference-Header-Content-Length": str(header_length), "Content-Type": "application/octet-stream"}
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    path = f"/v2/models/{model}/infer"

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout_s) as client:
        async def one_http(at: float) -> None:
            start = time.perf_counter()
            try:
                r = await client.post(path, content=body, headers=headers)
            except httpx.HTTPError as e:
                record(at, type(e).__name__, float("nan"), None)
                return
            latency = (time.perf_counter() - start) * 1e3
            if r.status_code != 200:
                record(at, r.status_code, latency, None)
                return
            hl = r.headers.get("inference-header-content-length")
            meta = json.loads(r.content[: int(hl)] if hl is not None else r.content)
            record(at, 200, latency, meta.get("parameters", {}))

        await run(one_http)
    return report


def replay_sync(url: str, model: str, trace: Trace | Sequence[float], **kwargs: Any) -> ReplayReport:
    """:func:`replay` from synchronous code."""
    return asyncio.run(replay(url, model, trace, **kwargs))

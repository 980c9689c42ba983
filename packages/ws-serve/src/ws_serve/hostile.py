"""Hostile input for a KServe v2 server: seeded malformed requests over HTTP and gRPC, and the checks a
robust server passes (no 5xx, no dropped connection, every error body ``{"error": str}``, every 200
strict JSON or valid binary tensor data).

    >>> from ws_serve.hostile import fuzz_http, hostile_http_requests           # doctest: +SKIP
    >>> report = fuzz_http("http://127.0.0.1:8000", hostile_http_requests(1000, seed=0, model="m",
    ...                                                                     sample_shape=(3, 32, 32)))
    >>> report.violations, report.counts

Kinds: malformed JSON and binary bodies, lying ``Inference-Header-Content-Length``, wrong shapes,
datatypes and sizes, non-finite values, absurd ``slo_ms`` (negative, zero, NaN, 1e308, strings, ...),
wrong parameter and output types, bad content encodings, unknown routes, methods, models and versions,
and well-formed requests in between (which must be served).
"""

from __future__ import annotations

import gzip
import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

__all__ = [
    "FuzzReport",
    "HostileRequest",
    "check_http_response",
    "fuzz_grpc",
    "fuzz_http",
    "hostile_grpc_requests",
    "hostile_http_requests",
]


@dataclass(frozen=True)
class HostileRequest:
    """One HTTP request of a fuzz run (``kind`` names what is wrong with it)."""

    kind: str
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FuzzReport:
    """``counts[(kind, status)]``; ``violations`` lists what a robust server must never do."""

    counts: Counter = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    @property
    def statuses(self) -> Counter:
        out: Counter = Counter()
        for (_, status), n in self.counts.items():
            out[status] += n
        return out


_ABSURD_SLO = [-1, -1e308, 0, 0.0, 1e308, 3_600_001, "NaN", "Infinity", "-Infinity", "fast", "", [], {}, True,
               None, [50], {"ms": 50}, 10**400]
_BAD_SHAPES = [[], [1], [1, 3, 32], [0, 3, 32, 32], [-1, 3, 32, 32], [10**12, 3, 32, 32], [1, 3, 32, 32, 1],
               [1.0, 3, 32, 32], ["1", 3, 32, 32], [True, 3, 32, 32], "1,3,32,32", None, {"0": 1}, [[1], 3, 32, 32],
               [1, 32, 32, 3], [1, 3, -32, 32], [2**63, 3, 32, 32]]
_BAD_DATATYPES = ["INT64", "FP16", "FP64", "BYTES", "fp32", "", " FP32", None, 32, ["FP32"], "FP32\x00"]
_ROUTES = [("GET", "/"), ("GET", "/v1/models/m:predict"), ("POST", "/v2"), ("PUT", "/v2/models/{m}/infer"),
           ("DELETE", "/v2/models/{m}"), ("GET", "/v2/models/{m}/infer"), ("POST", "/v2/health/ready"),
           ("GET", "/v2/models/%00/ready"), ("GET", "/v2/models/" + "x" * 3000), ("PATCH", "/metrics"),
           ("GET", "/v2/models/{m}/versions/-1"), ("POST", "/v2/models/nope/infer"),
           ("POST", "/v2/models/{m}/versions/99/infer"), ("GET", "/v2/models/\u00e9\u6f22/config"),
           ("GET", "/v2//models/{m}"), ("OPTIONS", "/v2/models/{m}/infer")]


def _json_token(value: Any) -> str:
    """JSON text with Python's ``NaN`` / ``Infinity`` tokens kept (what hostile clients send)."""
    return json.dumps(value, allow_nan=True)


def hostile_http_requests(n: int, seed: int, model: str, sample_shape: Sequence[int],
                          max_batch: int = 4) -> list[HostileRequest]:
    """``n`` seeded hostile requests (about one in eight well-formed) for ``model``'s infer endpoint and others."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    path = f"/v2/models/{model}/infer"
    shape = [1, *sample_shape]
    count = math.prod(shape)

    def base(batch: int = 1, binary: bool = False, **params: Any) -> tuple[dict, bytes]:
        x = nprng.standard_normal((batch, *sample_shape)).astype("<f4")
        inp: dict[str, Any] = {"name": "input", "shape": [batch, *sample_shape], "datatype": "FP32"}
        if binary:
            inp["parameters"] = {"binary_data_size": x.nbytes}
        else:
            inp["data"] = x.ravel().tolist()
        req: dict[str, Any] = {"inputs": [inp]}
        if params:
            req["parameters"] = params
        return req, (x.tobytes() if binary else b"")

    def body(req: dict, raw: bytes = b"", header: int | str | None = None) -> HostileRequest:
        head = _json_token(req).encode()
        headers = {}
        if raw or header is not None:
            headers["Inference-Header-Content-Length"] = str(len(head) if header is None else header)
        return HostileRequest(kind, "POST", path, head + raw, headers)

    out: list[HostileRequest] = []
    kinds = ["valid", "malformed_json", "binary_garbage", "lying_header_length", "wrong_shape", "wrong_datatype",
             "wrong_size", "non_finite", "absurd_slo", "bad_fields", "encoding", "route"]
    for i in range(n):
        kind = kinds[i % len(kinds)] if i < len(kinds) else rng.choice(kinds)
        choice = rng.randrange(8)
        if kind == "valid":
            req, raw = base(rng.randint(1, max_batch), binary=choice % 2 == 0, binary_data_output=choice % 3 == 0)
            out.append(body(req, raw))
        elif kind == "malformed_json":
            good = _json_token(base()[0]).encode()
            bodies = [good[: rng.randrange(1, len(good))], b"{" * rng.randint(1, 5), b"[" * 100_000,
                      b'{"inputs": [' + b"[" * 5000 + b"]" * 5000 + b"]}", b"\xff\xfe" + good, b"null", b"",
                      '{"inputs": "\ud800"}'.encode("utf-8", "surrogatepass")]
            out.append(HostileRequest(kind, "POST", path, bodies[choice]))
        elif kind == "binary_garbage":
            raw = nprng.integers(0, 256, rng.choice([1, 17, 4096, 20_000]), dtype=np.uint8).tobytes()
            header = rng.choice([None, 0, len(raw) // 2, len(raw)])
            headers = {} if header is None else {"Inference-Header-Content-Length": str(header)}
            out.append(HostileRequest(kind, "POST", path, raw, headers))
        elif kind == "lying_header_length":
            req, raw = base(binary=True)
            head_len = len(_json_token(req))
            lie = [head_len - 1, head_len + 1, head_len + 4096, -1, 10**18, "abc", "1e3", "", "+12",
                   head_len + len(raw)]
            out.append(body(req, raw, header=lie[rng.randrange(len(lie))]))
        elif kind == "wrong_shape":
            req, raw = base(binary=choice % 2 == 0)
            req["inputs"][0]["shape"] = rng.choice([*_BAD_SHAPES, [max_batch + 1, *sample_shape]])
            out.append(body(req, raw))
        elif kind == "wrong_datatype":
            req, raw = base(binary=choice % 2 == 0)
            req["inputs"][0]["datatype"] = rng.choice(_BAD_DATATYPES)
            out.append(body(req, raw))
        elif kind == "wrong_size":
            req, raw = base(binary=choice % 2 == 0)
            inp = req["inputs"][0]
            if raw:
                inp["parameters"]["binary_data_size"] = rng.choice([0, -4, 4 * count - 4, 4 * count + 4, "12288",
                                                                    10**30, None, 4.0 * count])
                raw = raw[: rng.choice([len(raw), len(raw) // 2, 0])]
            else:
                inp["data"] = rng.choice([inp["data"][:-1], inp["data"] + [0.0], [], [[1.0, 2.0], [3.0]],
                                          ["1"] * count, [None] * count, [10**400] * count, "abc", 5, {"a": 1}])
            out.append(body(req, raw))
        elif kind == "non_finite":
            binary = choice % 2 == 0
            req, raw = base(binary=binary)
            bad = rng.choice([math.nan, math.inf, -math.inf, 1e39, -3.5e38])
            if binary:
                x = np.frombuffer(raw, dtype="<f4").copy()
                with np.errstate(over="ignore"):
                    x[rng.randrange(count)] = bad
                raw = x.tobytes()
            else:
                req["inputs"][0]["data"][rng.randrange(count)] = bad
            out.append(body(req, raw))
        elif kind == "absurd_slo":
            slo = rng.choice(_ABSURD_SLO)
            slo = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(slo, slo) \
                if isinstance(slo, str) else slo
            req, raw = base(binary=choice % 2 == 0, slo_ms=slo)
            if slo is None:
                req["parameters"] = {"slo_ms": "1e308"}
            out.append(body(req, raw))
        elif kind == "bad_fields":
            req, raw = base(binary=choice % 2 == 0)
            field_name, value = rng.choice([
                ("parameters", []), ("parameters", "x"), ("parameters", 5), ("outputs", {"name": "logits"}),
                ("outputs", [1]), ("outputs", [{"name": "logits", "parameters": []}]), ("outputs", [{"name": None}]),
                ("outputs", [{"name": "logits", "parameters": {"binary_data": "yes"}}]), ("id", 5), ("id", ["a"]),
                ("id", "\ud800"), ("id", "x" * 10_000), ("inputs", [req["inputs"][0]] * 2), ("inputs", [5]),
                ("inputs", {}), ("inputs", None), ("input_parameters", [1]), ("input_name", 7)])
            if field_name == "input_parameters":
                req["inputs"][0]["parameters"] = value
            elif field_name == "input_name":
                req["inputs"][0]["name"] = value
            else:
                req[field_name] = value
            out.append(body(req, raw))
        elif kind == "encoding":
            good = _json_token(base()[0]).encode()
            variants = [({"Content-Encoding": "gzip"}, b"\x1f\x8b" + good[:50]),
                        ({"Content-Encoding": "deflate"}, good), ({"Content-Encoding": "br"}, good),
                        ({"Content-Encoding": "gzip"}, gzip.compress(b"0" * 2_000_000)),
                        ({"Content-Encoding": "gzip, gzip"}, gzip.compress(good)),
                        ({"Content-Type": "text/plain"}, good), ({"Content-Encoding": "gzip"}, gzip.compress(good)),
                        ({}, b" " * 2_000_000)]
            headers, payload = variants[choice]
            out.append(HostileRequest(kind, "POST", path, payload, headers))
        else:  # route
            method, route = rng.choice(_ROUTES)
            out.append(HostileRequest(kind, method, route.replace("{m}", model), _json_token(base()[0]).encode()))
    return out


def _strict_json(data: bytes) -> Any:
    def reject(token: str) -> Any:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(data, parse_constant=reject)


def check_http_response(status: int, headers: httpx.Headers, content: bytes) -> str | None:
    """What is wrong with a response to a hostile request, or ``None``."""
    if status >= 500:
        return f"status {status}: {content[:200]!r}"
    if status == 200:
        try:
            if "inference-header-content-length" in headers:
                head = int(headers["inference-header-content-length"])
                out = _strict_json(content[:head])
                size = out["outputs"][0]["parameters"]["binary_data_size"]
                if head + size != len(content):
                    return f"binary output of {len(content) - head} bytes, the header says {size}"
            elif content:
                _strict_json(content)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return f"200 with an invalid body ({e}): {content[:200]!r}"
        return None
    try:
        body = _strict_json(content)
    except ValueError as e:
        return f"status {status} with a body that is not strict JSON ({e}): {content[:200]!r}"
    if not (isinstance(body, dict) and list(body) == ["error"] and isinstance(body["error"], str)):
        return f"status {status} with a body that is not {{'error': str}}: {content[:200]!r}"
    return None


def fuzz_http(base_url: str, requests: Sequence[HostileRequest], timeout_s: float = 60.0) -> FuzzReport:
    """Send ``requests`` one after another; count ``(kind, status)`` (``"dropped"`` for a connection the
    server broke) and record every violation."""
    report = FuzzReport()
    with httpx.Client(base_url=base_url, timeout=timeout_s) as http:
        for req in requests:
            try:
                r = http.request(req.method, req.path, content=req.body, headers=req.headers)
            except httpx.TransportError as e:
                report.counts[(req.kind, "dropped")] += 1
                report.violations.append(f"{req.kind} {req.method} {req.path[:80]}: connection dropped ({e!r})")
                continue
            report.counts[(req.kind, r.status_code)] += 1
            problem = check_http_response(r.status_code, r.headers, r.content)
            if problem:
                report.violations.append(f"{req.kind} {req.method} {req.path[:80]}: {problem}")
    return report


def hostile_grpc_requests(n: int, seed: int, model: str, sample_shape: Sequence[int],
                          max_batch: int = 4) -> list[tuple[str, Any]]:
    """``n`` seeded ``(kind, ModelInferRequest)`` pairs, about one in six well-formed."""
    from tritonclient.grpc import service_pb2 as pb

    from .grpc_server import set_parameter

    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    count = math.prod(sample_shape)
    kinds = ["valid", "wrong_shape", "wrong_datatype", "wrong_size", "non_finite", "absurd_slo", "bad_fields"]
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)] if i < len(kinds) else rng.choice(kinds)
        batch = rng.randint(1, max_batch)
        x = nprng.standard_normal(batch * count).astype("<f4")
        req = pb.ModelInferRequest(model_name=model, id=f"fuzz-{i}")
        tensor = req.inputs.add(name="input", datatype="FP32", shape=[batch, *sample_shape])
        typed = rng.random() < 0.5
        if kind == "non_finite":
            x[rng.randrange(x.size)] = rng.choice([math.nan, math.inf, -math.inf])
        if kind == "wrong_size":
            x = x[: rng.choice([0, 1, x.size - 1])] if rng.random() < 0.7 else np.concatenate([x, x[:3]])
        if typed:
            tensor.contents.fp32_contents.extend(x.tolist())
        else:
            req.raw_input_contents.append(x.tobytes())
        if kind == "wrong_shape":
            del tensor.shape[:]
            tensor.shape.extend(rng.choice([[], [batch], [batch, *sample_shape, 1], [0, *sample_shape],
                                            [-1, *sample_shape], [max_batch + 1, *sample_shape],
                                            [2**62, *sample_shape], [batch, *reversed(sample_shape)]]))
        elif kind == "wrong_datatype":
            tensor.datatype = rng.choice(["INT64", "FP16", "BYTES", "", "fp32"])
        elif kind == "absurd_slo":
            set_parameter(req.parameters["slo_ms"], rng.choice([-1.0, 0.0, math.nan, math.inf, 1e308, "fast", "50",
                                                                True, -(2**62), 2**62]))
        elif kind == "bad_fields":
            change = rng.randrange(6)
            if change == 0:
                req.model_name = rng.choice(["", "nope", "x" * 5000])
            elif change == 1:
                req.model_version = "7"
            elif change == 2:
                req.inputs.add(name="input2", datatype="FP32", shape=[1])
            elif change == 3:
                req.outputs.add(name=rng.choice(["probs", "", "logits\x00"]))
            elif change == 4:
                tensor.name = rng.choice(["", "image", "input "])
            else:
                req.raw_input_contents.append(b"\0" * 8)
                if typed:
                    tensor.contents.int_contents.extend([1, 2])
        out.append((kind, req))
    return out


def fuzz_grpc(address: str, requests: Sequence[tuple[str, Any]], timeout_s: float = 60.0) -> FuzzReport:
    """Send ``requests`` over one channel; count ``(kind, status code name)``. Violations: ``INTERNAL``,
    ``UNKNOWN``, ``UNAVAILABLE`` (a dropped connection) or a reply that does not decode."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    report = FuzzReport()
    allowed = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for kind, req in requests:
            try:
                response = stub.ModelInfer(req, timeout=timeout_s)
                code = "OK"
                shape = list(response.outputs[0].shape)
                if len(response.raw_output_contents[0]) != 4 * math.prod(shape):
                    report.violations.append(f"{kind}: {len(response.raw_output_contents[0])} output bytes for "
                                             f"shape {shape}")
            except grpc.RpcError as e:
                code = e.code().name
                if not e.details():
                    report.violations.append(f"{kind}: {code} without a message")
            report.counts[(kind, code)] += 1
            if code not in allowed:
                report.violations.append(f"{kind}: {code}")
    return report

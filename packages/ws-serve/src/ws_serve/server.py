"""HTTP server speaking the Open Inference Protocol (KServe v2 REST), on FastAPI/uvicorn.

Standard clients work unchanged, e.g. ``tritonclient.http``::

    >>> import numpy as np, tritonclient.http as httpclient          # doctest: +SKIP
    >>> client = httpclient.InferenceServerClient("127.0.0.1:8000")
    >>> inp = httpclient.InferInput("input", [1, 3, 32, 32], "FP32")
    >>> inp.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    >>> result = client.infer("ws_ofa_mbv3_035_32", [inp], parameters={"slo_ms": 50})
    >>> result.as_numpy("logits").shape, result.get_response()["parameters"]["subnet_id"]

Endpoints: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}``
(``/versions/{v}``), ``/v2/models/{name}/ready``, ``/v2/models/{name}/config``,
``POST /v2/models/{name}[/versions/{v}]/infer``, and Prometheus ``GET /metrics``.

Requests may carry tensors as JSON ``data`` or with the binary tensor data extension
(``Inference-Header-Content-Length``; what tritonclient sends by default); outputs come back in the
form asked for (``binary_data_output`` / per-output ``binary_data``). The request parameter
``slo_ms`` sets the query's latency SLO (default: the server's). The response's ``parameters`` say
which SubNet served it (``subnet_id``), its profiled ``accuracy``, the batch it ran in, the queueing
and total latency and whether the SLO was met.

Bad input — malformed JSON, wrong input name, shape or datatype, an unknown model or version, a body
over the size limit — gets a 4xx with ``{"error": "..."}`` naming what was allowed and what was
received; the server keeps serving. Overload answers 503, a missed deadline 504.
"""

from __future__ import annotations

import contextlib
import json
import math
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from .profile import ServedSet
from .runtime import Router, ServeError

__all__ = ["BadRequest", "ModelInfo", "ParsedRequest", "create_app", "parse_infer_request"]

_VERSION = "0.1.0"


class BadRequest(Exception):
    """A request the server cannot accept; ``status`` is the 4xx to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ModelInfo:
    """What the server tells clients about the served SuperNet."""

    name: str
    sample_shape: tuple[int, ...]
    num_classes: int
    max_batch: int
    served: ServedSet
    version: str = "1"
    input_name: str = "input"
    output_name: str = "logits"
    platform: str = "pytorch_weightshare"
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name, "versions": [self.version], "platform": self.platform,
            "inputs": [{"name": self.input_name, "datatype": "FP32", "shape": [-1, *self.sample_shape]}],
            "outputs": [{"name": self.output_name, "datatype": "FP32", "shape": [-1, self.num_classes]}],
        }

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name, "platform": self.platform, "max_batch_size": self.max_batch,
            "accuracy_source": self.served.accuracy_source,
            "served_subnets": [s.to_dict() for s in self.served], **self.extra,
        }


@dataclass(frozen=True)
class ParsedRequest:
    inputs: torch.Tensor
    slo_ms: float | None
    request_id: str | None
    binary_output: bool


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{what} must be a finite number, got {value!r}")
    return float(value)


def parse_infer_request(body: bytes, header_length: int | None, model: ModelInfo) -> ParsedRequest:
    """Validate a v2 infer request (JSON, optionally followed by binary tensor data); raise :class:`BadRequest`."""
    if header_length is not None:
        if not 0 <= header_length <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length must be in [0, {len(body)}] (the body size), "
                             f"got {header_length}")
        head, binary = body[:header_length], body[header_length:]
    else:
        head, binary = body, b""
    try:
        req = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON request body: {e}") from None
    if not isinstance(req, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type(req).__name__}")
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest(f"'parameters' must be an object, got {type(params).__name__}")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        got = f"{len(inputs)} inputs" if isinstance(inputs, list) else repr(type(inputs).__name__)
        raise BadRequest(f"'inputs' must be a list with the one input {model.input_name!r}, got {got}")
    inp = inputs[0]
    if not isinstance(inp, dict):
        raise BadRequest("each input must be an object with name, shape, datatype and data")
    if inp.get("name") != model.input_name:
        raise BadRequest(f"unknown input {inp.get('name')!r}; the model's input is {model.input_name!r}")
    if inp.get("datatype") != "FP32":
        raise BadRequest(f"input {model.input_name!r}: datatype must be FP32, got {inp.get('datatype')!r}")
    shape = inp.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadRequest(f"input {model.input_name!r}: shape must be a list of integers, got {shape!r}")
    expected = [-1, *model.sample_shape]
    if len(shape) != len(expected) or list(shape[1:]) != list(model.sample_shape):
        raise BadRequest(f"input {model.input_name!r}: shape must be {expected} (batch first), got {shape}")
    if not 1 <= shape[0] <= model.max_batch:
        raise BadRequest(f"input {model.input_name!r}: batch size must be in [1, {model.max_batch}], got {shape[0]}")
    count = math.prod(shape)
    in_params = inp.get("parameters") or {}
    if not isinstance(in_params, dict):
        raise BadRequest(f"input {model.input_name!r}: 'parameters' must be an object")
    if "binary_data_size" in in_params:
        size = in_params["binary_data_size"]
        if not isinstance(size, int) or size != count * 4 or size > len(binary):
            raise BadRequest(f"input {model.input_name!r}: binary_data_size must be {count * 4} bytes "
                             f"({count} FP32 values) and present after the JSON header; got {size!r} with "
                             f"{len(binary)} binary bytes")
        array = np.frombuffer(binary[:size], dtype="<f4").reshape(shape)
    else:
        data = inp.get("data")
        if data is None:
            raise BadRequest(f"input {model.input_name!r}: needs 'data' or the binary_data_size parameter")
        try:
            array = np.asarray(data, dtype=np.float32)
        except (ValueError, TypeError):
            raise BadRequest(f"input {model.input_name!r}: data must be numbers (FP32), nested or flat") from None
        if array.size != count:
            raise BadRequest(f"input {model.input_name!r}: shape {shape} needs {count} values, data has {array.size}")
        array = array.reshape(shape)
    slo = params.get("slo_ms")
    if slo is not None:
        slo = _number(slo, "parameter 'slo_ms'")
        if not 0 < slo <= 3_600_000:
            raise BadRequest(f"parameter 'slo_ms' must be in (0, 3600000], got {slo:g}")
    binary_output = bool(params.get("binary_data_output", False))
    outputs = req.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise BadRequest("'outputs' must be a list")
        for out in outputs:
            name = out.get("name") if isinstance(out, dict) else None
            if name != model.output_name:
                raise BadRequest(f"unknown output {name!r}; the model's output is {model.output_name!r}")
            binary_output = bool((out.get("parameters") or {}).get("binary_data", binary_output))
    request_id = req.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest(f"'id' must be a string, got {type(request_id).__name__}")
    return ParsedRequest(torch.from_numpy(array.copy()), slo, request_id, binary_output)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest(f"Content-Length must be an integer, got {declared!r}") from None
        if size > limit:
            raise BadRequest(f"request body of {size} bytes exceeds the limit of {limit} bytes", 413)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BadRequest(f"request body exceeds the limit of {limit} bytes", 413)
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding in ("gzip", "deflate"):
        inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error as e:
            raise BadRequest(f"request body is not valid {encoding} data ({e})") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise BadRequest(f"decompressed request body exceeds the limit of {limit} bytes", 413)
    elif encoding != "identity":
        raise BadRequest(f"Content-Encoding must be gzip, deflate or identity, got {encoding!r}", 415)
    return body


def create_app(
    router: Router,
    model: ModelInfo,
    *,
    default_slo_ms: float = 100.0,
    max_body_bytes: int = 16 * 1024 * 1024,
    request_timeout_s: float = 30.0,
) -> FastAPI:
    """The FastAPI application serving ``model`` through ``router`` (started/stopped with the app)."""
    if not default_slo_ms > 0:
        raise ValueError(f"default_slo_ms must be > 0, got {default_slo_ms}")
    if max_body_bytes < 1024:
        raise ValueError(f"max_body_bytes must be >= 1024, got {max_body_bytes}")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await router.start()
        try:
            yield
        finally:
            await router.stop()

    app = FastAPI(title="ws-serve", version=_VERSION, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.router = router
    app.state.model = model

    def known(name: str, version: str | None = None) -> JSONResponse | None:
        if name != model.name:
            return _error(404, f"unknown model {name!r}; available: [{model.name!r}]")
        if version is not None and version != model.version:
            return _error(404, f"unknown version {version!r} of model {name!r}; available: [{model.version!r}]")
        return None

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "ws-serve", "version": _VERSION, "extensions": ["binary_tensor_data", "model_configuration"]}

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if router.ready else 503)

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str) -> Any:
        return known(name) or model.metadata()

    @app.get("/v2/models/{name}/versions/{version}")
    async def model_version_metadata(name: str, version: str) -> Any:
        return known(name, version) or model.metadata()

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        return known(name) or Response(status_code=200 if router.ready else 503)

    @app.get("/v2/models/{name}/config")
    async def model_config(name: str) -> Any:
        return known(name) or model.config()

    async def infer(request: Request, name: str, version: str | None) -> Response:
        arrival = router.clock()  # the SLO counts from here, body transfer and parsing included
        missing = known(name, version)
        if missing is not None:
            return missing
        try:
            body = await _read_body(request, max_body_bytes)
            header = request.headers.get("inference-header-content-length")
            try:
                header_length = None if header is None else int(header)
            except ValueError:
                raise BadRequest(f"Inference-Header-Content-Length must be an integer, got {header!r}") from None
            parsed = parse_infer_request(body, header_length, model)
        except BadRequest as e:
            return _error(e.status, str(e))
        slo_ms = parsed.slo_ms if parsed.slo_ms is not None else default_slo_ms
        try:
            result = await router.infer(parsed.inputs, slo_ms, timeout_s=max(request_timeout_s, slo_ms / 1e3),
                                        arrival=arrival)
        except ServeError as e:
            headers = {"Retry-After": "1"} if e.status == 503 else None
            return _error(e.status, str(e), headers)
        logits = result.outputs.contiguous().numpy().astype("<f4", copy=False)
        response: dict[str, Any] = {
            "model_name": model.name, "model_version": model.version,
            "parameters": {
                "subnet_id": result.subnet, "accuracy": result.accuracy, "batch_size": result.batch_size,
                "worker": result.worker, "slo_ms": result.slo_ms, "queue_ms": round(result.queue_ms, 3),
                "latency_ms": round(result.latency_ms, 3), "slo_met": result.met_slo,
            },
        }
        if parsed.request_id is not None:
            response["id"] = parsed.request_id
        output: dict[str, Any] = {"name": model.output_name, "datatype": "FP32", "shape": list(logits.shape)}
        response["outputs"] = [output]
        if not parsed.binary_output:
            output["data"] = logits.reshape(-1).tolist()
            return JSONResponse(response)
        raw = logits.tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
        head = json.dumps(response).encode()
        return Response(head + raw, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(len(head))})

    @app.post("/v2/models/{name}/infer")
    async def infer_latest(name: str, request: Request) -> Response:
        return await infer(request, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer_version(name: str, version: str, request: Request) -> Response:
        return await infer(request, name, version)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(router.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app

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
``POST /v2/models/{name}[/versions/{v}]/infer``, and Prometheus ``GET /metrics``. Of the extensions
``tritonclient`` calls: statistics (``GET /v2/models[/{name}[/versions/{v}]]/stats``, Triton's
``model_stats`` form, :meth:`~ws_serve.metrics.ServeMetrics.statistics`) and the repository index
(``POST /v2/repository/index``: the one model and its state). Model control
(``POST /v2/repository/models/{name}/load|unload``) is not supported and answers 400 saying so. The
model's name is the SuperNet's unless given (``ws-serve run --name``, :func:`check_model_name`); its
metadata and config carry where the served accuracies come from (``accuracy_source``; the MACs proxy
of an untrained SuperNet is labelled as such).

Requests may carry tensors as JSON ``data`` or with the binary tensor data extension
(``Inference-Header-Content-Length``; what tritonclient sends by default); outputs come back in the
form asked for (``binary_data_output`` / per-output ``binary_data``). The request parameter
``slo_ms`` sets the query's latency SLO (default: the server's); ``subnet_id`` (one of the served SubNet
ids, ``GET /v2/models/{name}/config``) pins the SubNet that serves it. The response's ``parameters`` say
which SubNet served it (``subnet_id``), its profiled ``accuracy``, the batch it ran in, whether the SLO
was met, and where the server's time went: ``queue_ms`` (arrival to dispatch), ``compute_ms`` (the
batch's run on its worker), ``overhead_ms`` (the rest: transport, parsing, scheduling) and
``latency_ms`` (arrival to result). The gRPC endpoint (:mod:`ws_serve.grpc_server`) checks requests
with the same :func:`validate_infer_request` and answers with the same parameters.

Bad input — malformed JSON, wrong input name, shape or datatype, NaN or infinite values, an unknown
model, version or endpoint, a body over the size limit — gets a 4xx with ``{"error": "..."}`` naming
what was allowed and what was received; the server keeps serving. Overload answers 503, a missed
deadline 504. Every body is strict JSON (never ``NaN``): outputs that are not finite go out as binary
tensor data, or, asked for as JSON, get a 400.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from .metrics import ServeMetrics
from .profile import PROXY_ACCURACY, ServedSet
from .runtime import InferenceResult, Router, ServeError

__all__ = [
    "EXTENSIONS",
    "BadRequest",
    "ModelInfo",
    "ParsedRequest",
    "accuracy_label",
    "check_model",
    "check_model_name",
    "create_app",
    "infer_response_parameters",
    "model_statistics_dict",
    "parse_infer_request",
    "repository_index_list",
    "run_infer",
    "server_metadata_dict",
    "server_overhead_ms",
    "validate_infer_request",
]

_VERSION = "0.1.0"
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_RESERVED_NAMES = ("stats",)  # GET /v2/models/stats is the statistics of every model
EXTENSIONS = ("binary_tensor_data", "model_configuration", "model_repository", "parameters", "statistics")


class BadRequest(Exception):
    """A request the server cannot accept; ``status`` is the 4xx to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_model_name(name: Any) -> str:
    """``name`` if it can name a served model (it goes into URL paths), else raise ``ValueError`` saying
    what is allowed."""
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name) or name in _RESERVED_NAMES:
        raise ValueError(f"a model name must be 1 to 128 characters from A-Z a-z 0-9 _ . -, starting with a "
                         f"letter or digit, and not {' or '.join(map(repr, _RESERVED_NAMES))}; got {_got(name)}")
    return name


def accuracy_label(source: str) -> str:
    """How to read accuracies recorded with ``source`` (:attr:`ServedSet.accuracy_source`): the MACs proxy
    of an untrained SuperNet says that it is not a measured accuracy; any other source is given as is."""
    return "MACs proxy, not measured" if source == PROXY_ACCURACY else source


@dataclass(frozen=True)
class ModelInfo:
    """What the server tells clients about the served SuperNet; ``name`` passes :func:`check_model_name`."""

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

    def __post_init__(self) -> None:
        check_model_name(self.name)

    def accuracy_parameters(self) -> dict[str, str]:
        """Where the served accuracies come from: ``accuracy_source`` and its ``accuracy_label``."""
        source = self.served.accuracy_source
        return {"accuracy_source": source, "accuracy_label": accuracy_label(source)}

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name, "versions": [self.version], "platform": self.platform,
            "inputs": [{"name": self.input_name, "datatype": "FP32", "shape": [-1, *self.sample_shape]}],
            "outputs": [{"name": self.output_name, "datatype": "FP32", "shape": [-1, self.num_classes]}],
            "parameters": self.accuracy_parameters(),
        }

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name, "platform": self.platform, "max_batch_size": self.max_batch,
            **self.accuracy_parameters(), "served_subnets": [s.to_dict() for s in self.served], **self.extra,
        }


@dataclass(frozen=True)
class ParsedRequest:
    inputs: torch.Tensor
    slo_ms: float | None
    request_id: str | None
    binary_output: bool
    subnet_id: str | None = None


def _got(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (error messages echo what hostile clients sent)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"


def _number(value: Any, what: str) -> float:
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an integer beyond float
        number = math.inf
    if not math.isfinite(number):
        raise BadRequest(f"{what} must be a finite number, got {_got(value)}")
    return number


def _finite(array: np.ndarray, name: str) -> np.ndarray:
    finite = np.isfinite(array)
    if not finite.all():
        nan = int(np.isnan(array).sum())
        raise BadRequest(f"input {name!r}: values must be finite FP32 numbers (|x| <= 3.4e38), got {nan} NaN and "
                         f"{array.size - int(finite.sum()) - nan} infinite of {array.size} values")
    return array


def check_model(model: ModelInfo, name: str, version: str | None = None) -> None:
    """Raise :class:`BadRequest` (404) unless ``name`` (and ``version``; ``None``: the latest) is served."""
    if name != model.name:
        raise BadRequest(f"unknown model {_got(name)}; available: [{model.name!r}]", 404)
    if version is not None and version != model.version:
        raise BadRequest(f"unknown version {_got(version)} of model {name!r}; available: [{model.version!r}]", 404)


def validate_infer_request(req: Any, model: ModelInfo, *, binary: bytes = b"",
                           raw: bytes | None = None) -> ParsedRequest:
    """The checks of a v2 infer request, the same for every transport; raise :class:`BadRequest`.

    ``req`` is the request in its JSON form (``inputs``, ``outputs``, ``parameters``, ``id``): the HTTP
    body, or a gRPC ``ModelInferRequest`` converted field by field. Tensor data is the input's ``data``
    (JSON numbers, nested or flat; gRPC ``contents``), ``binary`` with the input's ``binary_data_size``
    parameter (HTTP binary tensor data extension), or ``raw`` (gRPC ``raw_input_contents``).
    """
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
    name = model.input_name
    if inp.get("name") != name:
        raise BadRequest(f"unknown input {_got(inp.get('name'))}; the model's input is {name!r}")
    if inp.get("datatype") != "FP32":
        raise BadRequest(f"input {name!r}: datatype must be FP32, got {_got(inp.get('datatype'))}")
    shape = inp.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadRequest(f"input {name!r}: shape must be a list of integers, got {_got(shape)}")
    expected = [-1, *model.sample_shape]
    if len(shape) != len(expected) or list(shape[1:]) != list(model.sample_shape):
        raise BadRequest(f"input {name!r}: shape must be {expected} (batch first), got {_got(shape)}")
    if not 1 <= shape[0] <= model.max_batch:
        raise BadRequest(f"input {name!r}: batch size must be in [1, {model.max_batch}], got {shape[0]}")
    count = math.prod(shape)
    in_params = inp.get("parameters") or {}
    if not isinstance(in_params, dict):
        raise BadRequest(f"input {name!r}: 'parameters' must be an object, got {type(in_params).__name__}")
    if raw is not None:
        if inp.get("data") is not None:
            raise BadRequest(f"input {name!r}: give its data either as contents or as raw_input_contents, not both")
        if len(raw) != count * 4:
            raise BadRequest(f"input {name!r}: shape {shape} needs {count * 4} bytes of raw FP32 data "
                             f"({count} values), got {len(raw)} bytes")
        array = np.frombuffer(raw, dtype="<f4").reshape(shape)
    elif "binary_data_size" in in_params:
        size = in_params["binary_data_size"]
        if not isinstance(size, int) or size != count * 4 or size > len(binary):
            raise BadRequest(f"input {name!r}: binary_data_size must be {count * 4} bytes "
                             f"({count} FP32 values) and present after the JSON header; got {_got(size)} with "
                             f"{len(binary)} binary bytes")
        array = np.frombuffer(binary[:size], dtype="<f4").reshape(shape)
    else:
        data = inp.get("data")
        if data is None:
            raise BadRequest(f"input {name!r}: no tensor data; give 'data' (gRPC: contents), binary data "
                             f"(the binary_data_size parameter) or raw_input_contents")
        try:
            array = np.asarray(data)
        except (ValueError, TypeError, OverflowError):
            array = np.empty(0, dtype=object)
        if array.dtype.kind not in "iuf":
            got = {"U": "strings", "S": "bytes", "b": "booleans"}.get(
                array.dtype.kind, "nulls, objects, lists of unequal lengths or integers beyond 64 bits")
            raise BadRequest(f"input {name!r}: data must be numbers (FP32), nested or flat; got {got}")
        with np.errstate(over="ignore"):  # numbers beyond FP32 become inf, rejected below by name
            array = array.astype(np.float32, copy=False)
        if array.size != count:
            raise BadRequest(f"input {name!r}: shape {shape} needs {count} values, data has {array.size}")
        array = array.reshape(shape)
    _finite(array, name)
    slo = params.get("slo_ms")
    if slo is not None:
        slo = _number(slo, "parameter 'slo_ms'")
        if not 0 < slo <= 3_600_000:
            raise BadRequest(f"parameter 'slo_ms' must be in (0, 3600000], got {slo:g}")
    subnet_id = params.get("subnet_id")
    if subnet_id is not None and (not isinstance(subnet_id, str) or subnet_id not in model.served.ids):
        raise BadRequest(f"parameter 'subnet_id' must be one of the served SubNets {model.served.ids}, "
                         f"got {_got(subnet_id)}")
    binary_output = bool(params.get("binary_data_output", False))
    outputs = req.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise BadRequest(f"'outputs' must be a list, got {type(outputs).__name__}")
        for out in outputs:
            out_name = out.get("name") if isinstance(out, dict) else None
            if out_name != model.output_name:
                raise BadRequest(f"unknown output {_got(out_name)}; the model's output is {model.output_name!r}")
            out_params = out.get("parameters") or {}
            if not isinstance(out_params, dict):
                raise BadRequest(f"output {out_name!r}: 'parameters' must be an object, got "
                                 f"{type(out_params).__name__}")
            binary_output = bool(out_params.get("binary_data", binary_output))
    request_id = req.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest(f"'id' must be a string, got {type(request_id).__name__}")
    return ParsedRequest(torch.from_numpy(array.copy()), slo, request_id, binary_output, subnet_id)


def parse_infer_request(body: bytes, header_length: int | None, model: ModelInfo) -> ParsedRequest:
    """Validate an HTTP v2 infer body (JSON, optionally followed by binary tensor data); raise :class:`BadRequest`."""
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
    except RecursionError:
        raise BadRequest("malformed JSON request body: nested too deeply") from None
    return validate_infer_request(req, model, binary=binary)


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # strict JSON (no NaN), ASCII-escaped: any str a client sent (lone surrogates included) encodes
    return Response(json.dumps(obj, allow_nan=False, separators=(",", ":")).encode(), status_code=status,
                    headers=headers, media_type="application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"error": message}, status, headers)


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


async def run_infer(router: Router, parsed: ParsedRequest, arrival: float, *, default_slo_ms: float,
                    request_timeout_s: float) -> InferenceResult:
    """Serve a validated request through ``router`` (every transport); raises :class:`ServeError`."""
    slo_ms = parsed.slo_ms if parsed.slo_ms is not None else default_slo_ms
    return await router.infer(parsed.inputs, slo_ms, timeout_s=max(request_timeout_s, slo_ms / 1e3), arrival=arrival,
                              subnet=parsed.subnet_id)


def server_overhead_ms(result: InferenceResult, arrival: float, submitted: float, now: float) -> float:
    """Receive to respond (``arrival`` to ``now``) minus waiting in the queue (``submitted`` to dispatch) and
    the batch's run on its worker: the time the transport, parsing and the router's bookkeeping take."""
    waited_ms = result.queue_ms - (submitted - arrival) * 1e3
    return (now - arrival) * 1e3 - waited_ms - result.compute_ms


def infer_response_parameters(result: InferenceResult, overhead_ms: float) -> dict[str, Any]:
    """The ``parameters`` of an infer response (every transport): which SubNet served it and where the time went."""
    return {
        "subnet_id": result.subnet, "accuracy": result.accuracy, "batch_size": result.batch_size,
        "worker": result.worker, "slo_ms": result.slo_ms, "queue_ms": round(result.queue_ms, 3),
        "compute_ms": round(result.compute_ms, 3), "overhead_ms": round(overhead_ms, 3),
        "latency_ms": round(result.latency_ms, 3), "slo_met": result.met_slo,
    }


def _endpoints_error(request: Request, exc: StarletteHTTPException) -> Response:
    path = _got(request.url.path)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        message = (f"no endpoint {path}; the endpoints are /v2, /v2/health/live, /v2/health/ready, "
                   f"/v2/models/{{name}}[/versions/{{version}}][/ready|/config|/infer|/stats], /v2/models/stats, "
                   f"/v2/repository/index and /metrics")
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {path}; allowed: {headers.get('Allow')}"
    else:
        message = f"{path}: {exc.detail}"
    return _error(exc.status_code, message, headers)


def create_app(
    router: Router,
    model: ModelInfo,
    *,
    default_slo_ms: float = 100.0,
    max_body_bytes: int = 16 * 1024 * 1024,
    request_timeout_s: float = 30.0,
) -> FastAPI:
    """The FastAPI application serving ``model`` through ``router`` (started/stopped with the app).

    ``app.state.services`` is a list of async context manager factories (e.g. the gRPC endpoint,
    :func:`ws_serve.grpc_server.grpc_service`): each is entered after the router starts, in order, and
    exited before it stops.
    """
    if not default_slo_ms > 0:
        raise ValueError(f"default_slo_ms must be > 0, got {default_slo_ms}")
    if max_body_bytes < 1024:
        raise ValueError(f"max_body_bytes must be >= 1024, got {max_body_bytes}")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await router.start()
        try:
            async with contextlib.AsyncExitStack() as services:
                for service in app.state.services:
                    await services.enter_async_context(service())
                yield
        finally:
            await router.stop()

    app = FastAPI(title="ws-serve", version=_VERSION, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.router = router
    app.state.model = model
    app.state.services = []
    app.state.limits = {"default_slo_ms": default_slo_ms, "request_timeout_s": request_timeout_s,
                        "max_body_bytes": max_body_bytes}

    @app.exception_handler(StarletteHTTPException)
    async def protocol_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _endpoints_error(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _error(400, f"invalid request to {_got(request.url.path)}: {_got(exc.errors(), 300)}")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        return _error(500, f"internal error: {type(exc).__name__}")

    def known(name: str, version: str | None = None) -> Response | None:
        try:
            check_model(model, name, version)
        except BadRequest as e:
            return _error(e.status, str(e))
        return None

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return server_metadata_dict()

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if router.ready else 503)

    @app.get("/v2/models/stats")  # before /v2/models/{name}, which would take "stats" for a name
    async def all_statistics() -> Any:
        return model_statistics_dict(model, router.metrics)

    @app.get("/v2/models/{name}/stats")
    async def statistics(name: str) -> Any:
        return known(name) or model_statistics_dict(model, router.metrics)

    @app.get("/v2/models/{name}/versions/{version}/stats")
    async def version_statistics(name: str, version: str) -> Any:
        return known(name, version) or model_statistics_dict(model, router.metrics)

    @app.post("/v2/repository/index")
    async def repository_index(request: Request) -> Any:
        try:
            body = await _read_body(request, 64 * 1024)
            req = json.loads(body) if body.strip() else {}
        except BadRequest as e:
            return _error(e.status, str(e))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return _error(400, f"the repository index request must be empty or a JSON object, got {_got(body)}")
        ready = req.get("ready", False) if isinstance(req, dict) else None
        if not isinstance(ready, bool):
            return _error(400, f"the repository index request must be empty or a JSON object with an optional "
                               f"boolean 'ready', got {_got(req)}")
        return _json(repository_index_list(model, router, ready_only=ready))

    @app.post("/v2/repository/models/{name}/load")
    async def load(name: str) -> Response:
        return _error(400, _no_model_control(model, "load", name))

    @app.post("/v2/repository/models/{name}/unload")
    async def unload(name: str) -> Response:
        return _error(400, _no_model_control(model, "unload", name))

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

        def failed(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
            router.metrics.request_failed(router.clock() - arrival)
            return _error(status, message, headers)

        try:
            body = await _read_body(request, max_body_bytes)
            header = request.headers.get("inference-header-content-length")
            try:
                header_length = None if header is None else int(header)
            except ValueError:
                raise BadRequest(f"Inference-Header-Content-Length must be an integer, got {_got(header)}") from None
            parsed = parse_infer_request(body, header_length, model)
        except BadRequest as e:
            return failed(e.status, str(e))
        submitted = router.clock()
        try:
            result = await run_infer(router, parsed, arrival, default_slo_ms=default_slo_ms,
                                     request_timeout_s=request_timeout_s)
        except ServeError as e:
            headers = {"Retry-After": "1"} if e.status == 503 else None
            return failed(e.status, str(e), headers)
        logits = result.outputs.contiguous().numpy().astype("<f4", copy=False)
        if not parsed.binary_output and not np.isfinite(logits).all():
            return failed(400, f"input {model.input_name!r}: these values give non-finite outputs, which JSON cannot "
                               f"carry; send smaller values or ask for binary output (parameter binary_data_output)")
        response: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
        if parsed.request_id is not None:
            response["id"] = parsed.request_id
        output: dict[str, Any] = {"name": model.output_name, "datatype": "FP32", "shape": list(logits.shape)}
        response["outputs"] = [output]
        response["parameters"] = infer_response_parameters(
            result, server_overhead_ms(result, arrival, submitted, router.clock()))
        if not parsed.binary_output:
            output["data"] = logits.reshape(-1).tolist()
            reply = _json(response)
        else:
            raw = logits.tobytes()
            output["parameters"] = {"binary_data_size": len(raw)}
            head = json.dumps(response, separators=(",", ":")).encode()
            reply = Response(head + raw, media_type="application/octet-stream",
                             headers={"Inference-Header-Content-Length": str(len(head))})
        now = router.clock()
        router.metrics.request_overhead("http", server_overhead_ms(result, arrival, submitted, now) / 1e3)
        router.metrics.request_succeeded(logits.shape[0], now - arrival, result.queue_ms / 1e3, result.compute_ms / 1e3)
        return reply

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


def server_metadata_dict() -> dict[str, Any]:
    """The server metadata (``GET /v2``; gRPC ``ServerMetadata``): name, version and the protocol extensions
    it supports (model control, of the ``model_repository`` extension, is refused: one model is served)."""
    return {"name": "ws-serve", "version": _VERSION, "extensions": list(EXTENSIONS)}


def model_statistics_dict(model: ModelInfo, metrics: ServeMetrics) -> dict[str, Any]:
    """The statistics extension's answer for the served model (``GET /v2/models[/{name}]/stats``; gRPC
    ``ModelStatistics``), in Triton's form: ``{"model_stats": [{"name", "version", "inference_count", ...}]}``."""
    return {"model_stats": [{"name": model.name, "version": model.version, **metrics.statistics(),
                             "response_stats": {}}]}


def repository_index_list(model: ModelInfo, router: Router, ready_only: bool = False) -> list[dict[str, str]]:
    """The repository index (``POST /v2/repository/index``; gRPC ``RepositoryIndex``): the served model with
    its state, ``READY`` or ``UNAVAILABLE`` with the ``reason``; ``ready_only`` leaves out a model not ready."""
    if router.ready:
        return [{"name": model.name, "version": model.version, "state": "READY", "reason": ""}]
    if ready_only:
        return []
    reason = "no worker is alive" if not router.alive_workers() else "the server is starting or shutting down"
    return [{"name": model.name, "version": model.version, "state": "UNAVAILABLE", "reason": reason}]


def _no_model_control(model: ModelInfo, action: str, name: str) -> str:
    return (f"cannot {action} model {_got(name)}: ws-serve does not support model control; it serves the one "
            f"model {model.name!r}, loaded at start-up (ws-serve run --model/--checkpoint, --name)")

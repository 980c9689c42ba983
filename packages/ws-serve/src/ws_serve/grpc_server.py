"""The Open Inference Protocol over gRPC (KServe v2 ``inference.GRPCInferenceService``), on grpc.aio.

It runs in the event loop of the HTTP server and serves through the same :class:`~ws_serve.runtime.Router`
(``ws-serve run --grpc-port PORT``). Standard clients work unchanged, e.g. ``tritonclient.grpc``::

    >>> import numpy as np, tritonclient.grpc as grpcclient            # doctest: +SKIP
    >>> client = grpcclient.InferenceServerClient("127.0.0.1:8001")
    >>> inp = grpcclient.InferInput("input", [1, 3, 32, 32], "FP32")
    >>> inp.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    >>> result = client.infer("ws_ofa_mbv3_035_32", [inp], parameters={"slo_ms": 50})
    >>> result.as_numpy("logits").shape, result.get_response().parameters["subnet_id"].string_param

RPCs: ``ServerLive``, ``ServerReady``, ``ModelReady``, ``ServerMetadata``, ``ModelMetadata``,
``ModelConfig`` (Triton's ``ModelConfig``; its ``parameters`` carry ``accuracy_source``,
``accuracy_label`` and the served set as JSON, since ``ModelMetadataResponse`` has no parameters),
``ModelInfer``, ``ModelStatistics`` (the statistics extension, as over HTTP) and ``RepositoryIndex``;
the others, model control (``RepositoryModelLoad`` / ``Unload``) among them, answer ``UNIMPLEMENTED``
with a message saying so. The messages are the generated protobuf modules
shipped with ``tritonclient[grpc]`` (Triton's service is a superset of KServe v2's, same package and
names). Inputs come as typed ``contents`` (``fp32_contents``) or as ``raw_input_contents``; the output
goes back in ``raw_output_contents``. A request is checked by the same function as over HTTP
(:func:`~ws_serve.server.validate_infer_request`), with the same parameters (``slo_ms`` in; ``subnet_id``,
``accuracy``, ... out) and the same messages. A client's RPC deadline (gRPC's timeout) bounds the query's:
its SLO becomes the smaller of ``slo_ms`` and the time the deadline leaves when the handler starts, so
the time a request waited in gRPC's and the event loop's queues counts against its slack.
Status codes: bad input ``INVALID_ARGUMENT``, unknown model
``NOT_FOUND``, full queue ``RESOURCE_EXHAUSTED``, missed deadline ``DEADLINE_EXCEEDED``, no worker or
shutting down ``UNAVAILABLE``, a failed forward ``INTERNAL``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from .runtime import Overloaded, Router, ServeError
from .server import (
    BadRequest,
    ModelInfo,
    _no_model_control,
    check_model,
    infer_response_parameters,
    model_statistics_dict,
    repository_index_list,
    run_infer,
    server_metadata_dict,
    server_overhead_ms,
    validate_infer_request,
)

__all__ = [
    "RPCS",
    "GrpcEndpoint",
    "InferenceServicer",
    "add_grpc_endpoint",
    "grpc_service",
    "grpc_status",
    "request_json",
    "set_parameter",
    "start_grpc_server",
]

RPCS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelConfig", "ModelInfer",
        "ModelStatistics", "RepositoryIndex")  # the RPCs served; the others answer UNIMPLEMENTED

_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
          413: grpc.StatusCode.RESOURCE_EXHAUSTED, 415: grpc.StatusCode.INVALID_ARGUMENT,
          503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}


def grpc_status(error: BadRequest | ServeError) -> grpc.StatusCode:
    """The gRPC status of an error that HTTP answers with ``error.status``."""
    if isinstance(error, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return _CODES.get(error.status, grpc.StatusCode.INTERNAL)


def _value(param: pb.InferParameter) -> Any:
    which = param.WhichOneof("parameter_choice")
    return None if which is None else getattr(param, which)


def set_parameter(param: pb.InferParameter, value: Any) -> None:
    """Store ``value`` in the ``InferParameter`` field of its type (bool, int64, double, else string)."""
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    else:
        param.string_param = str(value)


def request_json(request: pb.ModelInferRequest) -> tuple[dict[str, Any], bytes | None]:
    """A ``ModelInferRequest`` in the JSON form of the HTTP API, and the raw data of its first input
    (``raw_input_contents``; ``None`` if the data is in ``contents``)."""
    inputs = []
    for tensor in request.inputs:
        inp: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
                               "parameters": {k: _value(v) for k, v in tensor.parameters.items()}}
        fields = [f.name for f, _ in tensor.contents.ListFields()]
        if fields:
            if tensor.datatype == "FP32" and fields != ["fp32_contents"]:
                raise BadRequest(f"input {tensor.name!r}: FP32 data goes in contents.fp32_contents, got "
                                 f"{', '.join(f'contents.{f}' for f in fields)}")
            inp["data"] = getattr(tensor.contents, fields[0])
        inputs.append(inp)
    raw = request.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise BadRequest(f"raw_input_contents must hold one entry per input ({len(inputs)}), got {len(raw)}")
    req: dict[str, Any] = {"inputs": inputs, "parameters": {k: _value(v) for k, v in request.parameters.items()}}
    if request.outputs:
        req["outputs"] = [{"name": o.name, "parameters": {k: _value(v) for k, v in o.parameters.items()}}
                          for o in request.outputs]
    if request.id:
        req["id"] = request.id
    return req, (raw[0] if raw else None)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` for ``model``, served through ``router``."""

    def __init__(self, router: Router, model: ModelInfo, *, default_slo_ms: float = 100.0,
                 request_timeout_s: float = 30.0) -> None:
        if not default_slo_ms > 0:
            raise ValueError(f"default_slo_ms must be > 0, got {default_slo_ms}")
        self.router = router
        self.model = model
        self.default_slo_ms = default_slo_ms
        self.request_timeout_s = request_timeout_s

    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.router.ready)

    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**server_metadata_dict())

    async def ModelReady(self, request, context) -> pb.ModelReadyResponse:
        await self._known(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=self.router.ready)

    async def ModelMetadata(self, request, context) -> pb.ModelMetadataResponse:
        await self._known(request.name, request.version, context)
        meta = self.model.metadata()
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]], outputs=[tensor(**t) for t in meta["outputs"]])

    async def ModelConfig(self, request, context) -> pb.ModelConfigResponse:
        await self._known(request.name, request.version, context)
        model = self.model
        parameters = {**model.accuracy_parameters(), **{k: str(v) for k, v in model.extra.items()},
                      "served_subnets": json.dumps([s.to_dict() for s in model.served], separators=(",", ":"))}
        config = mc.ModelConfig(
            name=model.name, platform=model.platform, max_batch_size=model.max_batch,
            input=[mc.ModelInput(name=model.input_name, data_type=mc.TYPE_FP32, dims=list(model.sample_shape))],
            output=[mc.ModelOutput(name=model.output_name, data_type=mc.TYPE_FP32, dims=[model.num_classes])],
            parameters={k: mc.ModelParameter(string_value=v) for k, v in parameters.items()})
        return pb.ModelConfigResponse(config=config)

    async def ModelInfer(self, request, context) -> pb.ModelInferResponse:
        arrival = self.router.clock()
        remaining = context.time_remaining()  # the client's deadline, if it set one
        try:
            return await self._infer(request, arrival, remaining)
        except (BadRequest, ServeError) as e:
            failure = (grpc_status(e), str(e))
            if not (isinstance(e, BadRequest) and e.status == 404):  # a request for the model that failed
                self.router.metrics.request_failed(self.router.clock() - arrival)
        except Exception as e:  # never a crash: an explicit INTERNAL, as HTTP answers 500
            failure = (grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}")
        await context.abort(*failure)

    async def ModelStatistics(self, request, context) -> pb.ModelStatisticsResponse:
        if request.name or request.version:  # no name: every model, as Triton does
            await self._known(request.name, request.version, context)
        return json_format.ParseDict(model_statistics_dict(self.model, self.router.metrics),
                                     pb.ModelStatisticsResponse())

    async def RepositoryIndex(self, request, context) -> pb.RepositoryIndexResponse:
        index = repository_index_list(self.model, self.router, ready_only=request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**m) for m in index])

    async def RepositoryModelLoad(self, request, context) -> pb.RepositoryModelLoadResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _no_model_control(self.model, "load", request.model_name))

    async def RepositoryModelUnload(self, request, context) -> pb.RepositoryModelUnloadResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            _no_model_control(self.model, "unload", request.model_name))

    async def _known(self, name: str, version: str, context) -> None:
        try:
            check_model(self.model, name, version or None)
        except BadRequest as e:
            await context.abort(grpc_status(e), str(e))

    async def _infer(self, request: pb.ModelInferRequest, arrival: float,
                     remaining_s: float | None = None) -> pb.ModelInferResponse:
        router, model = self.router, self.model
        check_model(model, request.model_name, request.model_version or None)
        req, raw = request_json(request)
        parsed = validate_infer_request(req, model, raw=raw)
        if remaining_s is not None:  # the RPC's deadline also bounds the query's (time spent before the handler ran)
            slo_ms = parsed.slo_ms if parsed.slo_ms is not None else self.default_slo_ms
            parsed = replace(parsed, slo_ms=max(min(slo_ms, remaining_s * 1e3), 1e-3))
        submitted = router.clock()
        result = await run_infer(router, parsed, arrival, default_slo_ms=self.default_slo_ms,
                                 request_timeout_s=self.request_timeout_s)
        logits = result.outputs.contiguous().numpy().astype("<f4", copy=False)
        response = pb.ModelInferResponse(
            model_name=model.name, model_version=model.version, id=parsed.request_id or "",
            outputs=[pb.ModelInferResponse.InferOutputTensor(name=model.output_name, datatype="FP32",
                                                             shape=list(logits.shape))],
            raw_output_contents=[logits.tobytes()])
        overhead_ms = server_overhead_ms(result, arrival, submitted, router.clock())
        for key, value in infer_response_parameters(result, overhead_ms).items():
            set_parameter(response.parameters[key], value)
        now = router.clock()
        router.metrics.request_overhead("grpc", server_overhead_ms(result, arrival, submitted, now) / 1e3)
        router.metrics.request_succeeded(logits.shape[0], now - arrival, result.queue_ms / 1e3, result.compute_ms / 1e3)
        return response


def _unimplemented(rpc: str):
    """A servicer method that answers ``UNIMPLEMENTED`` naming ``rpc`` and the RPCs that are served."""
    async def method(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            f"ws-serve does not implement {rpc}; it serves {', '.join(RPCS)}")
    method.__name__ = method.__qualname__ = rpc
    return method


for _rpc in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name:
    if _rpc not in InferenceServicer.__dict__:  # instead of the generated base's bare "Method not implemented!"
        setattr(InferenceServicer, _rpc, _unimplemented(_rpc))


async def start_grpc_server(router: Router, model: ModelInfo, host: str = "127.0.0.1", port: int = 0, *,
                            default_slo_ms: float = 100.0, request_timeout_s: float = 30.0,
                            max_body_bytes: int = 16 * 1024 * 1024) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC endpoint in the running event loop on ``host:port`` (0: a free port); returns the
    server and its port. Raises ``OSError`` if the address cannot be bound."""
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", max_body_bytes),
        ("grpc.max_send_message_length", max_body_bytes),
        ("grpc.so_reuseport", 0),  # a port in use is an error, as for HTTP
    ])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(router, model, default_slo_ms=default_slo_ms, request_timeout_s=request_timeout_s), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise OSError(f"gRPC: cannot listen on {address}: {e}") from None
    if bound == 0:
        raise OSError(f"gRPC: cannot listen on {address}")
    await server.start()
    return server, bound


@dataclass
class GrpcEndpoint:
    """The gRPC endpoint of an app (:func:`add_grpc_endpoint`); ``port`` is set once it listens."""

    host: str
    port: int | None = None

    @property
    def address(self) -> str | None:
        """``host:port`` for clients, or ``None`` while not listening."""
        if self.port is None:
            return None
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def add_grpc_endpoint(app: Any, host: str = "127.0.0.1", port: int = 0, *, grace_s: float = 30.0) -> GrpcEndpoint:
    """Serve the router and model of ``app`` (:func:`~ws_serve.server.create_app`) over gRPC for the app's
    lifetime, with its limits; returns the endpoint, whose ``port`` is set when the app starts."""
    endpoint = GrpcEndpoint(host)
    router, model, limits = app.state.router, app.state.model, app.state.limits

    @contextlib.asynccontextmanager
    async def service() -> AsyncIterator[None]:
        async with grpc_service(router, model, host, port, grace_s=grace_s, **limits) as bound:
            endpoint.port = bound
            try:
                yield
            finally:
                endpoint.port = None

    app.state.services.append(service)
    return endpoint


@contextlib.asynccontextmanager
async def grpc_service(router: Router, model: ModelInfo, host: str = "127.0.0.1", port: int = 0, *,
                       grace_s: float = 30.0, **limits: Any) -> AsyncIterator[int]:
    """:func:`start_grpc_server` for the length of an ``async with`` block (yields the port); on exit
    the server stops accepting and answers the calls in flight (for up to ``grace_s``)."""
    server, bound = await start_grpc_server(router, model, host, port, **limits)
    try:
        yield bound
    finally:
        await server.stop(grace_s)

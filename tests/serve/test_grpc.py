"""The KServe v2 gRPC endpoint, live on a loopback port beside HTTP (one Router), driven by tritonclient."""

from __future__ import annotations

import grpc
import httpx
import numpy as np
import pytest
import torch

from ws_serve.deploy import build_app, load_supernet, make_local_workers
from ws_serve.runtime import DeadlineExceeded, InferenceFailed, NoWorkers, Overloaded
from ws_serve.server import BadRequest

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is needed for the gRPC tests")
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from ws_serve.grpc_server import add_grpc_endpoint, grpc_status  # noqa: E402

MODEL = "ws_ofa_mbv3_035_32"


@pytest.fixture(scope="module")
def live(deployment, serve_in_thread):
    """HTTP and gRPC endpoints of one app (one Router) on free loopback ports: ``(http, grpc, router)``."""
    workers = make_local_workers(deployment, workers=1)
    app, router = build_app(deployment, workers, "slackfit", default_slo_ms=5000, overhead_ms=0.0)
    endpoint = add_grpc_endpoint(app, "127.0.0.1", 0, grace_s=1)
    with serve_in_thread(app) as address:
        yield address, endpoint.address, router


@pytest.fixture(scope="module")
def reference(deployment):
    """An independent copy of the served SuperNet (same seed, same weights) for expected outputs."""
    return load_supernet(MODEL)


def _images(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def _expected(reference, deployment, subnet_id, x):
    cfg = next(s.config for s in deployment.served if s.id == subnet_id)
    with torch.no_grad():
        return reference.extract(cfg).eval()(torch.from_numpy(x)).numpy()


def _params(response):
    return {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in response.parameters.items()}


def test_tritonclient_grpc_works_unchanged(live, deployment, reference):
    _, address, _ = live
    client = grpcclient.InferenceServerClient(address)
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
        server = client.get_server_metadata(as_json=True)
        assert server["name"] == "ws-serve" and "binary_tensor_data" in server["extensions"]
        meta = client.get_model_metadata(MODEL, as_json=True)
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "3", "32", "32"]}]
        assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": ["-1", "10"]}]

        x = _images(2)
        inp = grpcclient.InferInput("input", [2, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(x)  # raw_input_contents, tritonclient's way
        result = client.infer(MODEL, [inp], parameters={"slo_ms": 4000}, request_id="g-1")
        params = _params(result.get_response())
        assert result.get_response().id == "g-1" and params["slo_ms"] == 4000 and params["slo_met"] is True
        assert params["subnet_id"] in deployment.served.ids and params["batch_size"] >= 2
        assert {"accuracy", "queue_ms", "compute_ms", "overhead_ms", "latency_ms", "worker"} <= params.keys()
        np.testing.assert_allclose(result.as_numpy("logits"), _expected(reference, deployment, params["subnet_id"], x),
                                   atol=1e-4)
        default = client.infer(MODEL, [inp], outputs=[grpcclient.InferRequestedOutput("logits")], model_version="1")
        assert _params(default.get_response())["slo_ms"] == 5000  # the server's default SLO
    finally:
        client.close()


def test_the_rpc_deadline_bounds_the_query_deadline(live):
    _, address, _ = live
    client = grpcclient.InferenceServerClient(address)
    try:
        inp = grpcclient.InferInput("input", [1, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(_images(1))
        # the client gives the call 20 s: the query's SLO becomes what is left of them, not 60 s (gRPC sends
        # the timeout in whole units of its header, so the server may read slightly more than 20 s)
        bounded = _params(client.infer(MODEL, [inp], parameters={"slo_ms": 60_000}, client_timeout=20).get_response())
        assert 0 < bounded["slo_ms"] <= 21_000 and bounded["slo_met"] is True
        # a deadline later than the SLO leaves the SLO as it is
        loose = _params(client.infer(MODEL, [inp], parameters={"slo_ms": 4000}, client_timeout=60).get_response())
        assert loose["slo_ms"] == 4000
    finally:
        client.close()


def test_typed_contents_in_raw_contents_out(live, deployment, reference):
    _, address, _ = live
    x = _images(1, seed=3)
    request = pb.ModelInferRequest(model_name=MODEL, id="typed")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 3, 32, 32])
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    request.parameters["slo_ms"].int64_param = 3000
    with grpc.insecure_channel(address) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    params = _params(response)
    assert response.id == "typed" and params["slo_ms"] == 3000
    assert [list(o.shape) for o in response.outputs] == [[1, 10]] and response.outputs[0].datatype == "FP32"
    logits = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(1, 10)
    np.testing.assert_allclose(logits, _expected(reference, deployment, params["subnet_id"], x), atol=1e-4)


def _grpc_error(address, request):
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as info:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    return info.value.code(), info.value.details()


def _request(shape=(1, 3, 32, 32), name="input", datatype="FP32", values=None, **params):
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name=name, datatype=datatype, shape=list(shape))
    count = int(np.prod(shape))
    data = np.zeros(count, np.float32) if values is None else np.asarray(values, np.float32)
    request.raw_input_contents.append(data.tobytes())
    for key, value in params.items():
        if isinstance(value, str):
            request.parameters[key].string_param = value
        else:
            request.parameters[key].double_param = value
    return request


def test_bad_input_is_invalid_argument_saying_allowed_and_got_as_http_does(live):
    http_address, address, _ = live
    nan = np.zeros(3072, np.float32)
    nan[5] = np.nan
    cases = [
        (_request(shape=(1, 3, 28, 28)), "shape must be [-1, 3, 32, 32] (batch first), got [1, 3, 28, 28]"),
        (_request(shape=(9, 3, 32, 32)), "batch size must be in [1, 4], got 9"),
        (_request(name="image"), "unknown input 'image'; the model's input is 'input'"),
        (_request(datatype="INT64"), "datatype must be FP32, got 'INT64'"),
        (_request(slo_ms="fast"), "parameter 'slo_ms' must be a finite number, got 'fast'"),
        (_request(slo_ms=-1.0), "parameter 'slo_ms' must be in (0, 3600000], got -1"),
        (_request(slo_ms=float("nan")), "parameter 'slo_ms' must be a finite number, got nan"),
        (_request(values=nan), "input 'input': values must be finite FP32 numbers"),
    ]
    short = _request()
    short.raw_input_contents[0] = b"\0" * 100
    cases.append((short, "needs 12288 bytes of raw FP32 data (3072 values), got 100 bytes"))
    typed = pb.ModelInferRequest(model_name=MODEL)
    typed.inputs.add(name="input", datatype="FP32", shape=[1, 3, 32, 32]).contents.int_contents.extend([1] * 3072)
    cases.append((typed, "FP32 data goes in contents.fp32_contents, got contents.int_contents"))
    for request, message in cases:
        code, details = _grpc_error(address, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details, (message, details)

    # one validation function: HTTP says exactly the same about the same request
    body = {"inputs": [{"name": "input", "shape": [1, 3, 28, 28], "datatype": "FP32", "data": [0.0] * 2352}]}
    r = httpx.post(f"http://{http_address}/v2/models/{MODEL}/infer", json=body, timeout=30)
    assert r.status_code == 400 and r.json()["error"] == _grpc_error(address, _request(shape=(1, 3, 28, 28)))[1]

    unknown = _request()
    unknown.model_name = "resnet"
    code, details = _grpc_error(address, unknown)
    assert code == grpc.StatusCode.NOT_FOUND and "unknown model 'resnet'" in details

    client = grpcclient.InferenceServerClient(address)
    try:
        with pytest.raises(InferenceServerException, match="unknown model 'resnet'"):
            client.get_model_metadata("resnet")
        inp = grpcclient.InferInput("input", [1, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(_images(1))
        assert client.infer(MODEL, [inp]).as_numpy("logits").shape == (1, 10)  # still serving
    finally:
        client.close()


def test_serve_errors_map_to_grpc_status_codes():
    assert grpc_status(BadRequest("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_status(BadRequest("x", 404)) == grpc.StatusCode.NOT_FOUND
    assert grpc_status(Overloaded("full")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_status(DeadlineExceeded("late")) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert grpc_status(NoWorkers("none")) == grpc.StatusCode.UNAVAILABLE
    assert grpc_status(InferenceFailed("boom")) == grpc.StatusCode.INTERNAL


def _served(http_address):
    text = httpx.get(f"http://{http_address}/metrics").text
    return float(next(line.split()[-1] for line in text.splitlines()
                      if line.startswith('ws_serve_requests_total{outcome="ok"}')))


def test_http_and_grpc_share_one_router(live):
    http_address, address, _ = live
    before = _served(http_address)
    client = grpcclient.InferenceServerClient(address)
    try:
        inp = grpcclient.InferInput("input", [1, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(_images(1))
        client.infer(MODEL, [inp])
    finally:
        client.close()
    assert _served(http_address) == before + 1  # the gRPC request went through the router HTTP reports on
    text = httpx.get(f"http://{http_address}/metrics").text
    assert 'ws_serve_request_overhead_seconds_count{transport="grpc"}' in text

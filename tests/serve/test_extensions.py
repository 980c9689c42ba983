"""The protocol extensions tritonclient calls (statistics, repository index, model control), a model
published under a name of the user's choosing, and the accuracy source in the model's metadata — over
HTTP and gRPC, against one in-process server on loopback ports."""

from __future__ import annotations

import grpc
import httpx
import numpy as np
import pytest

from ws_serve.deploy import build_app, deploy, make_local_workers
from ws_serve.profile import PROXY_ACCURACY
from ws_serve.server import EXTENSIONS, accuracy_label, check_model_name

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is needed for the client tests")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is needed for the gRPC tests")
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from ws_serve.grpc_server import RPCS, add_grpc_endpoint  # noqa: E402

ARCH = "ws_ofa_mbv3_035_32"
NAME = "tiny-classifier.v2"


@pytest.fixture(scope="module")
def named(deployment):
    """The session's deployment published as ``NAME`` (its served set and profile: nothing re-measured)."""
    return deploy(ARCH, served=deployment.served, profile=deployment.profile, max_batch=4, name=NAME)


@pytest.fixture(scope="module")
def live(named, serve_in_thread):
    """HTTP and gRPC endpoints of one app with its own router (fresh counters): ``(http, grpc, router)``."""
    app, router = build_app(named, make_local_workers(named, 1, "eager"), "slackfit", default_slo_ms=5000,
                            overhead_ms=0.0)
    endpoint = add_grpc_endpoint(app, "127.0.0.1", 0, grace_s=1)
    with serve_in_thread(app) as address:
        yield address, endpoint.address, router


def _images(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def _http_input(x):
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def _grpc_input(x):
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def test_the_model_is_served_under_the_chosen_name(live):
    http_address, grpc_address, _ = live
    http = httpclient.InferenceServerClient(http_address)
    assert http.get_model_metadata(NAME)["name"] == NAME and http.is_model_ready(NAME)
    result = http.infer(NAME, [_http_input(_images(1))])
    assert result.get_response()["model_name"] == NAME and result.as_numpy("logits").shape == (1, 10)
    with pytest.raises(InferenceServerException, match=f"unknown model '{ARCH}'; available: \\['{NAME}'\\]"):
        http.get_model_metadata(ARCH)  # the architecture's name is not published any more

    client = grpcclient.InferenceServerClient(grpc_address)
    try:
        assert client.get_model_metadata(NAME, as_json=True)["name"] == NAME and client.is_model_ready(NAME)
        result = client.infer(NAME, [_grpc_input(_images(1))])
        assert result.get_response().model_name == NAME and result.as_numpy("logits").shape == (1, 10)
        with pytest.raises(InferenceServerException, match=f"unknown model '{ARCH}'") as info:
            client.infer(ARCH, [_grpc_input(_images(1))])
        assert info.value.status() == "StatusCode.NOT_FOUND"
    finally:
        client.close()


def test_model_names_are_checked_saying_allowed_and_got(deployment):
    for good in ("m", "ResNet-50_v1.5", "x" * 128):
        assert check_model_name(good) == good
    for bad in ("", "a/b", "../x", "my model", ".hidden", "stats", "x" * 129, None):
        with pytest.raises(ValueError, match=r"1 to 128 characters from A-Z a-z 0-9 _ \. -.*; got"):
            check_model_name(bad)
    with pytest.raises(ValueError, match="got 'a/b'"):  # checked before anything is loaded
        deploy(ARCH, served=deployment.served, profile=deployment.profile, max_batch=4, name="a/b")


def test_metadata_and_config_say_the_accuracies_are_a_macs_proxy(live, named):
    http_address, grpc_address, _ = live
    assert named.served.accuracy_source == PROXY_ACCURACY  # a randomly initialised SuperNet: nothing measured
    expected = {"accuracy_source": PROXY_ACCURACY, "accuracy_label": "MACs proxy, not measured"}
    with httpx.Client(base_url=f"http://{http_address}", timeout=30) as http:
        assert http.get(f"/v2/models/{NAME}").json()["parameters"] == expected
        config = http.get(f"/v2/models/{NAME}/config").json()
    assert {k: config[k] for k in expected} == expected
    # gRPC's ModelMetadataResponse has no parameters field: ModelConfig's parameters carry the source
    client = grpcclient.InferenceServerClient(grpc_address)
    try:
        config = client.get_model_config(NAME, as_json=True)["config"]
    finally:
        client.close()
    assert {k: config["parameters"][k]["string_value"] for k in expected} == expected
    assert config["name"] == NAME and config["max_batch_size"] == 4
    assert config["input"][0]["dims"] == ["3", "32", "32"] and config["output"][0]["dims"] == ["10"]
    assert accuracy_label("measured accuracy") == "measured accuracy"


def test_statistics_extension_counts_requests_like_triton(live):
    http_address, grpc_address, _ = live
    http = httpclient.InferenceServerClient(http_address)
    before = http.get_inference_statistics(NAME)["model_stats"][0]
    http.infer(NAME, [_http_input(_images(2))])
    client = grpcclient.InferenceServerClient(grpc_address)
    try:
        client.infer(NAME, [_grpc_input(_images(1))])
        with pytest.raises(InferenceServerException):  # a bad request for the model: one failure
            client.infer(NAME, [_grpc_input(np.zeros((1, 3, 8, 8), np.float32))])
        with pytest.raises(InferenceServerException):  # another model: not this model's failure
            client.infer("resnet", [_grpc_input(_images(1))])
        grpc_stats = client.get_inference_statistics(NAME, as_json=True)["model_stats"][0]
    finally:
        client.close()
    r = httpx.post(f"http://{http_address}/v2/models/{NAME}/infer", content=b"{", timeout=30)
    assert r.status_code == 400

    after = http.get_inference_statistics(NAME)["model_stats"][0]
    assert after["name"] == NAME and after["version"] == "1"

    def delta(stats, key):
        return {f: int(stats["inference_stats"][key].get(f, 0)) - before["inference_stats"][key][f]
                for f in ("count", "ns")}

    assert after["inference_count"] - before["inference_count"] == 3  # samples of successful requests
    assert after["execution_count"] - before["execution_count"] == 2  # one batch each (sent one by one)
    assert delta(after, "success")["count"] == 2 and delta(after, "success")["ns"] > 0
    assert delta(after, "fail")["count"] == 2 and delta(after, "fail")["ns"] > 0
    assert delta(after, "queue")["count"] == 2 and delta(after, "compute_infer")["count"] == 2
    assert delta(after, "compute_infer")["ns"] > 0
    assert delta(after, "success")["ns"] >= delta(after, "compute_infer")["ns"]
    assert delta(after, "cache_hit") == {"count": 0, "ns": 0}
    assert after["last_inference"] > 0
    sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}
    assert sum(sizes.values()) == after["execution_count"] and set(sizes) <= {1, 2, 3, 4}

    # gRPC reports the same counters (JSON of uint64 fields: strings); the HTTP failure came after it
    assert int(grpc_stats["inference_count"]) == after["inference_count"]
    assert int(grpc_stats["inference_stats"]["fail"]["count"]) == after["inference_stats"]["fail"]["count"] - 1
    # every model (the one), the version path, and an unknown model in the protocol's error form
    assert http.get_inference_statistics()["model_stats"][0]["name"] == NAME
    assert http.get_inference_statistics(NAME, "1")["model_stats"][0]["inference_count"] == after["inference_count"]
    with pytest.raises(InferenceServerException, match="unknown model 'resnet'"):
        http.get_inference_statistics("resnet")
    with pytest.raises(InferenceServerException, match="unknown version '7'"):
        http.get_inference_statistics(NAME, "7")


def test_repository_index_lists_the_one_ready_model(live):
    http_address, grpc_address, _ = live
    model = {"name": NAME, "version": "1", "state": "READY", "reason": ""}
    assert httpclient.InferenceServerClient(http_address).get_model_repository_index() == [model]
    with httpx.Client(base_url=f"http://{http_address}", timeout=30) as http:
        assert http.post("/v2/repository/index", json={"ready": True}).json() == [model]
        r = http.post("/v2/repository/index", json={"ready": "yes"})
        assert r.status_code == 400 and "optional boolean 'ready', got {'ready': 'yes'}" in r.json()["error"]
        r = http.post("/v2/repository/index", content=b"[")
        assert r.status_code == 400 and list(r.json()) == ["error"]
    client = grpcclient.InferenceServerClient(grpc_address)
    try:
        index = client.get_model_repository_index(as_json=True)
    finally:
        client.close()
    assert index == {"models": [{"name": NAME, "version": "1", "state": "READY"}]}  # JSON leaves out ""


def test_model_control_is_refused_in_the_protocol_form(live):
    http_address, grpc_address, _ = live
    http = httpclient.InferenceServerClient(http_address)
    for call in (http.load_model, http.unload_model):
        with pytest.raises(InferenceServerException, match="does not support model control") as info:
            call(NAME)
        assert info.value.status() == "400"
    r = httpx.post(f"http://{http_address}/v2/repository/models/other/load", timeout=30)
    assert r.status_code == 400 and list(r.json()) == ["error"]
    assert f"serves the one model '{NAME}'" in r.json()["error"]

    client = grpcclient.InferenceServerClient(grpc_address)
    try:
        for call in (client.load_model, client.unload_model):
            with pytest.raises(InferenceServerException, match="does not support model control") as info:
                call(NAME)
            assert info.value.status() == "StatusCode.UNIMPLEMENTED"
        # the other RPCs say which ones are served instead of gRPC's bare "Method not implemented!"
        with pytest.raises(InferenceServerException, match="does not implement SystemSharedMemoryStatus") as info:
            client.get_system_shared_memory_status()
        assert info.value.status() == "StatusCode.UNIMPLEMENTED" and "ModelStatistics" in info.value.message()
    finally:
        client.close()
    with grpc.insecure_channel(grpc_address) as channel, pytest.raises(grpc.RpcError) as info:
        list(pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter([pb.ModelInferRequest()]), timeout=30))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED and "does not implement ModelStreamInfer" in \
        info.value.details()


def test_server_metadata_lists_the_extensions(live):
    http_address, grpc_address, _ = live
    assert {"statistics", "model_repository", "binary_tensor_data", "model_configuration"} <= set(EXTENSIONS)
    assert httpclient.InferenceServerClient(http_address).get_server_metadata()["extensions"] == list(EXTENSIONS)
    client = grpcclient.InferenceServerClient(grpc_address)
    try:
        assert client.get_server_metadata(as_json=True)["extensions"] == list(EXTENSIONS)
    finally:
        client.close()
    assert set(RPCS) >= {"ModelStatistics", "RepositoryIndex", "ModelConfig"}

"""The KServe v2 HTTP server, live on a loopback port, driven by tritonclient and raw HTTP."""

from __future__ import annotations

import asyncio
import gzip
import json

import httpx
import numpy as np
import pytest
import torch

from ws_serve.deploy import build_app, load_supernet, make_local_workers
from ws_serve.policies import FixedSubNet
from ws_serve.profile import Profile, ServedSet
from ws_serve.runtime import Router, Worker
from ws_serve.server import BadRequest, ModelInfo, create_app, parse_infer_request

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is needed for the client tests")

MODEL = "ws_ofa_mbv3_035_32"


@pytest.fixture(scope="module")
def live(deployment, serve_in_thread):
    workers = make_local_workers(deployment, workers=2)
    app, router = build_app(deployment, workers, "slackfit", default_slo_ms=5000, max_body_bytes=64 * 1024,
                            overhead_ms=0.0)
    with serve_in_thread(app) as address:
        yield address, router, workers


@pytest.fixture(scope="module")
def reference(deployment):
    """An independent copy of the served SuperNet (same seed, same weights) for expected outputs."""
    return load_supernet(MODEL)


def _images(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def test_tritonclient_works_unchanged(live, deployment, reference):
    address, _, _ = live
    client = httpclient.InferenceServerClient(address)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    meta = client.get_model_metadata(MODEL)
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    config = client.get_model_config(MODEL)
    assert [s["id"] for s in config["served_subnets"]] == deployment.served.ids

    x = _images(2)
    inp = httpclient.InferInput("input", [2, 3, 32, 32], "FP32")
    inp.set_data_from_numpy(x)  # binary tensor data extension, tritonclient's default
    result = client.infer(MODEL, [inp], parameters={"slo_ms": 4000}, request_id="r-1")
    response = result.get_response()
    params = response["parameters"]
    assert response["id"] == "r-1" and params["slo_ms"] == 4000
    assert params["subnet_id"] in deployment.served.ids and params["slo_met"] is True
    cfg = next(s.config for s in deployment.served if s.id == params["subnet_id"])
    with torch.no_grad():
        expected = reference.extract(cfg).eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(result.as_numpy("logits"), expected, atol=1e-4)

    # JSON tensors in and out
    inp = httpclient.InferInput("input", [1, 3, 32, 32], "FP32")
    inp.set_data_from_numpy(x[:1], binary_data=False)
    out = httpclient.InferRequestedOutput("logits", binary_data=False)
    result = client.infer(MODEL, [inp], outputs=[out], model_version="1")
    assert result.as_numpy("logits").shape == (1, 10)
    assert result.get_response()["parameters"]["slo_ms"] == 5000  # the server's default SLO


def test_bad_input_gets_a_clear_4xx_and_serving_continues(live):
    address, _, _ = live
    base = f"http://{address}/v2/models/{MODEL}/infer"
    good = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                        "data": _images(1).ravel().tolist()}]}

    def bad(**changes):
        req = json.loads(json.dumps(good))
        req["inputs"][0].update(changes)
        return req

    cases = [
        (dict(content=b"{not json"), 400, "malformed JSON"),
        (dict(json=[1, 2]), 400, "JSON object"),
        (dict(json={"inputs": []}), 400, "one input 'input'"),
        (dict(json=bad(name="image")), 400, "unknown input 'image'"),
        (dict(json=bad(datatype="INT64")), 400, "datatype must be FP32, got 'INT64'"),
        (dict(json=bad(shape=[1, 3, 28, 28])), 400, "shape must be [-1, 3, 32, 32]"),
        (dict(json=bad(shape=[9, 3, 32, 32])), 400, "batch size must be in [1, 4], got 9"),
        (dict(json=bad(data=[1.0, 2.0])), 400, "needs 3072 values, data has 2"),
        (dict(json=bad(data=["a"] * 3072)), 400, "data must be numbers"),
        (dict(json=dict(good, parameters={"slo_ms": -1})), 400, "slo_ms' must be in (0"),
        (dict(json=dict(good, parameters={"slo_ms": "fast"})), 400, "finite number"),
        (dict(json=dict(good, outputs=[{"name": "probs"}])), 400, "unknown output 'probs'"),
        (dict(content=b"x" * (65 * 1024)), 413, "exceeds the limit of 65536 bytes"),
        (dict(content=b"{}", headers={"Content-Encoding": "br"}), 415, "Content-Encoding"),
        (dict(content=b"{}", headers={"Inference-Header-Content-Length": "99"}), 400, "must be in [0, 2]"),
    ]
    with httpx.Client(timeout=30) as http:
        for kwargs, status, message in cases:
            r = http.post(base, **kwargs)
            assert r.status_code == status, (kwargs.keys(), r.text)
            assert message in r.json()["error"], r.json()
        r = http.post(f"http://{address}/v2/models/resnet/infer", json=good)
        assert r.status_code == 404 and "unknown model 'resnet'" in r.json()["error"]
        r = http.post(f"http://{address}/v2/models/{MODEL}/versions/7/infer", json=good)
        assert r.status_code == 404 and "unknown version '7'" in r.json()["error"]
        assert http.get(f"http://{address}/v2/models/resnet").status_code == 404
        # gzip bodies are accepted; and after all of the above the server still serves
        r = http.post(base, content=gzip.compress(json.dumps(good).encode()), headers={"Content-Encoding": "gzip"})
        assert r.status_code == 200 and len(r.json()["outputs"][0]["data"]) == 10
        bomb = gzip.compress(b"0" * (1024 * 1024))
        r = http.post(base, content=bomb, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 413


def test_metrics_report_queue_attainment_subnets_and_latency(live):
    address, _, _ = live
    client = httpclient.InferenceServerClient(address)
    inp = httpclient.InferInput("input", [1, 3, 32, 32], "FP32")
    inp.set_data_from_numpy(_images(1))
    served = {client.infer(MODEL, [inp]).get_response()["parameters"]["subnet_id"] for _ in range(3)}
    text = httpx.get(f"http://{address}/metrics").text
    assert "ws_serve_queue_length 0.0" in text
    assert "ws_serve_workers_alive" in text
    assert 'ws_serve_requests_total{outcome="ok"}' in text
    assert "ws_serve_slo_attainment 1.0" in text
    for sid in served:
        assert f'ws_serve_subnet_requests_total{{subnet="{sid}"}}' in text
    assert "ws_serve_request_latency_seconds_bucket" in text and "ws_serve_batch_size_count" in text


def test_a_killed_worker_is_removed_and_serving_continues(deployment, serve_in_thread):
    workers = make_local_workers(deployment, workers=2)
    app, _ = build_app(deployment, workers, "maxacc", default_slo_ms=5000)
    with serve_in_thread(app) as address:
        workers[1].kill()  # the next batch sent to it is lost and retried on the other worker
        with httpx.Client(timeout=30) as http:
            body = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                "data": [0.5] * 3072}]}
            responses = [http.post(f"http://{address}/v2/models/{MODEL}/infer", json=body) for _ in range(4)]
            assert [r.status_code for r in responses] == [200] * 4
            assert {r.json()["parameters"]["worker"] for r in responses} == {"cpu-0"}
            assert http.get(f"http://{address}/v2/health/ready").status_code == 200
            assert "ws_serve_workers_alive 1.0" in http.get(f"http://{address}/metrics").text
            workers[0].kill()
            r = http.post(f"http://{address}/v2/models/{MODEL}/infer", json=body)
            assert r.status_code == 503 and "no worker is alive" in r.json()["error"]
            assert http.get(f"http://{address}/v2/health/ready").status_code == 503
            assert http.get(f"http://{address}/v2/health/live").status_code == 200


class GatedWorker(Worker):
    """Returns zero logits once its gate opens."""

    def __init__(self, gate: asyncio.Event | None = None):
        super().__init__("gated")
        self.gate = gate

    async def infer(self, x, subnet):
        if self.gate is not None:
            await self.gate.wait()
        return torch.zeros(x.shape[0], 10)


def test_overload_and_deadlines_map_to_503_and_504(deployment, serve_in_thread):
    served = deployment.served
    profile = Profile(tuple(served.ids), tuple(s.accuracy for s in served), ((1.0, 1.0),) * len(served))
    info = ModelInfo(MODEL, (3, 32, 32), 10, 2, served)
    gate_box: dict[str, asyncio.Event] = {}

    class LazyGate(GatedWorker):
        async def infer(self, x, subnet):
            self.gate = gate_box.setdefault("gate", asyncio.Event())
            return await super().infer(x, subnet)

    router = Router([LazyGate()], FixedSubNet(profile, 0), max_queue=2)
    app = create_app(router, info, default_slo_ms=60_000)
    body = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}]}

    async def scenario(address):
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as http:
            url = f"/v2/models/{MODEL}/infer"
            first = asyncio.create_task(http.post(url, json=body))       # occupies the worker
            await asyncio.sleep(0.3)
            short = asyncio.create_task(http.post(url, json=dict(body, parameters={"slo_ms": 50})))
            long = asyncio.create_task(http.post(url, json=body))
            await asyncio.sleep(0.3)
            rejected = await http.post(url, json=body)                   # the queue holds 2: rejected
            await asyncio.sleep(0.1)
            gate_box["gate"].set()
            return rejected, await first, await short, await long

    with serve_in_thread(app) as address:
        rejected, first, short, long = asyncio.run(scenario(address))
    assert rejected.status_code == 503 and "queue full" in rejected.json()["error"]
    assert rejected.headers["retry-after"] == "1"
    assert first.status_code == 200 and long.status_code == 200
    assert short.status_code == 504 and "SLO of 50 ms" in short.json()["error"]


def test_parse_infer_request_directly():
    served = ServedSet.from_dict({"subnets": [{"config": {"a": 1}, "accuracy": 1.0}]})
    info = ModelInfo("m", (2,), 3, 4, served)
    head = json.dumps({"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 16}}],
                       "parameters": {"binary_data_output": True, "slo_ms": 20}}).encode()
    raw = np.arange(4, dtype="<f4").tobytes()
    parsed = parse_infer_request(head + raw, len(head), info)
    assert parsed.inputs.tolist() == [[0.0, 1.0], [2.0, 3.0]] and parsed.slo_ms == 20 and parsed.binary_output
    with pytest.raises(BadRequest, match="binary_data_size must be 16"):
        parse_infer_request(head + raw[:8], len(head), info)
    nested = json.dumps({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [[1, 2]]}]})
    assert parse_infer_request(nested.encode(), None, info).inputs.tolist() == [[1.0, 2.0]]


def test_non_finite_input_gets_400_naming_the_input(live):
    address, _, _ = live
    url = f"http://{address}/v2/models/{MODEL}/infer"
    x = _images(1)
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    with httpx.Client(timeout=30) as http:
        # JSON: Python's json reads NaN / Infinity tokens; a number beyond FP32 becomes infinite
        cases = [(x.ravel().tolist(), "1 NaN and 2 infinite"), ([1e39] + [0.0] * 3071, "0 NaN and 1 infinite")]
        for data, got in cases:
            body = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                           "data": data}]})
            r = http.post(url, content=body)
            assert r.status_code == 400, r.text
            assert r.json() == {"error": f"input 'input': values must be finite FP32 numbers (|x| <= 3.4e38), got "
                                         f"{got} of 3072 values"}
        inp = httpclient.InferInput("input", [1, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(x)  # binary tensor data
        with pytest.raises(httpclient.InferenceServerException, match="1 NaN and 2 infinite"):
            httpclient.InferenceServerClient(address).infer(MODEL, [inp])


class NaNWorker(Worker):
    async def infer(self, x, subnet):
        return torch.full((x.shape[0], 10), float("nan"))


def test_non_finite_outputs_are_encoded_validly_or_refused(deployment, serve_in_thread):
    served = deployment.served
    profile = Profile(tuple(served.ids), tuple(s.accuracy for s in served), ((1.0, 1.0),) * len(served))
    router = Router([NaNWorker("nan")], FixedSubNet(profile, 0))
    app = create_app(router, ModelInfo(MODEL, (3, 32, 32), 10, 2, served), default_slo_ms=60_000)
    body = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}]}
    with serve_in_thread(app) as address, httpx.Client(base_url=f"http://{address}", timeout=30) as http:
        r = http.post(f"/v2/models/{MODEL}/infer", json=body)   # JSON cannot carry NaN: a 400, not a 500
        assert r.status_code == 400 and "non-finite outputs" in r.json()["error"]
        binary = dict(body, parameters={"binary_data_output": True})
        r = http.post(f"/v2/models/{MODEL}/infer", json=binary)  # raw FP32 carries them
        assert r.status_code == 200
        head = int(r.headers["inference-header-content-length"])
        assert np.isnan(np.frombuffer(r.content[head:], dtype="<f4")).all()


def test_unknown_routes_and_methods_answer_in_the_protocol_form(live):
    address, _, _ = live
    with httpx.Client(base_url=f"http://{address}", timeout=30) as http:
        r = http.get("/v1/models")
        assert r.status_code == 404 and list(r.json()) == ["error"] and "no endpoint '/v1/models'" in r.json()["error"]
        r = http.get(f"/v2/models/{MODEL}/infer")
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        assert r.json() == {"error": f"method GET is not allowed on '/v2/models/{MODEL}/infer'; allowed: POST"}
        r = http.post("/v2/health/live")
        assert r.status_code == 405 and list(r.json()) == ["error"]


def test_response_parameters_split_the_server_time(live):
    address, _, _ = live
    body = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}]}
    params = httpx.post(f"http://{address}/v2/models/{MODEL}/infer", json=body, timeout=30).json()["parameters"]
    assert params["compute_ms"] > 0 and params["overhead_ms"] > 0 and params["queue_ms"] >= 0
    assert params["latency_ms"] >= params["compute_ms"]
    text = httpx.get(f"http://{address}/metrics").text
    assert 'ws_serve_request_overhead_seconds_count{transport="http"}' in text

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from ws_core.checkpoint import save_checkpoint
from ws_serve.cli import build_parser, main, serving_banner
from ws_serve.profile import PROXY_ACCURACY, Profile, ServedSet
from ws_serve.traces import Trace, synthetic_maf_invocations, write_maf_invocations


def test_simulate_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "sim.json"
    assert main(["simulate", "--trace", "bursty", "--duration", "1", "--cv2", "4",
                 "--policy", "slackfit", "--policy", "mincost", "--policy", "fixed:23", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "synthetic" in text and "slackfit" in text and "mincost" in text
    results = json.loads(out.read_text())
    assert [r["policy"] for r in results][:2] == ["slackfit", "mincost"]
    assert all(0.0 <= r["slo_attainment"] <= 1.0 for r in results)
    with pytest.raises(SystemExit, match="unknown policies"):
        main(["simulate", "--duration", "1", "--policy", "fastest"])
    with pytest.raises(SystemExit):
        main(["run", "--model", "ws_ofa_mbv3_035_32", "--policy", "fastest"])
    assert "--policy must be one of" in capsys.readouterr().err


def test_trace_files_feed_simulate(tmp_path, capsys):
    bursty = tmp_path / "b.csv"
    assert main(["trace", "bursty", "--out", str(bursty), "--duration", "2", "--base-rate", "100",
                 "--variant-rate", "200", "--cv2", "2"]) == 0
    assert len(Trace.load(bursty)) == pytest.approx(600, rel=0.15)
    maf_csv = write_maf_invocations(tmp_path / "invocations_per_function_md.anon.d01.csv",
                                    synthetic_maf_invocations(num_functions=10, minutes=60, seed=1))
    maf = tmp_path / "maf.json"
    assert main(["trace", "maf", "--out", str(maf), "--invocations", str(maf_csv), "--duration", "3",
                 "--mean-rate", "500"]) == 0
    assert Trace.load(maf).mean_rate == pytest.approx(500, rel=0.1)
    assert main(["trace", "time-varying", "--out", str(tmp_path / "tv.csv"), "--duration", "2"]) == 0
    profile = tmp_path / "p.json"
    Profile(("a", "b"), (70.0, 80.0), ((1.0, 1.5), (3.0, 5.0))).save(profile)
    capsys.readouterr()
    assert main(["simulate", "--profile", str(profile), "--trace", str(maf), "--workers", "2", "--slo-ms", "20"]) == 0
    assert "maf" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="none of these"):
        main(["simulate", "--trace", str(tmp_path / "missing.csv")])


def test_profile_writes_files_next_to_the_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = save_checkpoint(timm.create_model("ws_ofa_mbv3_035_32", num_classes=10), tmp_path / "net.safetensors")
    images = tmp_path / "calib.safetensors"
    save_file({"images": torch.randn(16, 3, 32, 32)}, str(images))
    out = tmp_path / "profile.json"
    assert main(["profile", "--checkpoint", str(ckpt), "--subnets", "2", "--max-batch", "2",
                 "--profile-repeats", "1", "--calibrate", str(images), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "recalibrated" in text and "b=2" in text
    served = ServedSet.load(f"{ckpt}.served.json")
    profile = Profile.load(out)
    assert sorted(profile.subnet_ids) == sorted(served.ids) and profile.max_batch == 2
    assert os.path.isfile(f"{ckpt}.subnetnorm.safetensors")
    assert any(p.name.startswith("net.safetensors.latency-cpu") for p in tmp_path.iterdir())


def test_profile_predicted_from_blocks_caches_the_block_table(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = save_checkpoint(timm.create_model("ws_ofa_mbv3_035_32", num_classes=10), tmp_path / "net.safetensors")
    out = tmp_path / "profile.json"
    assert main(["profile", "--checkpoint", str(ckpt), "--subnets", "3", "--max-batch", "2", "--profile-repeats",
                 "1", "--profile-rounds", "1", "--latency", "predicted", "--latency-anchors", "2",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "latency prediction: measuring 2 anchor SubNet(s) whole" in text
    profile = Profile.load(out)
    assert profile.note.startswith("predicted from per-block latencies") and "leave-one-out" in profile.note
    assert profile.max_batch == 2 and len(profile.subnet_ids) == 3
    assert os.path.isfile(f"{ckpt}.blocks.json")
    assert not any(p.name.startswith("net.safetensors.latency-cpu") for p in tmp_path.iterdir())
    with pytest.raises(SystemExit):
        main(["profile", "--checkpoint", str(ckpt), "--latency-anchors", "-1"])
    assert "--latency-anchors: must be >= 0, got -1" in capsys.readouterr().err


def _wait_for(path, pattern, proc, timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        m = re.search(pattern, text)
        if m:
            return m
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{text}")
        time.sleep(0.1)
    raise AssertionError(f"server did not start in {timeout} s:\n{path.read_text()}")


def test_end_to_end_server_process(tmp_path):
    """Start ``python -m ws_serve run`` as a real process on a free loopback port, infer, scrape, shut down."""
    torch.manual_seed(0)
    ckpt = save_checkpoint(timm.create_model("ws_ofa_mbv3_035_32", num_classes=10), tmp_path / "net.safetensors")
    log = tmp_path / "server.log"
    ready = tmp_path / "ready.json"
    name = "tiny-net"
    cmd = [sys.executable, "-m", "ws_serve", "run", "--checkpoint", str(ckpt), "--port", "0", "--name", name,
           "--subnets", "3", "--max-batch", "2", "--profile-repeats", "1", "--workers", "2", "--slo-ms", "5000",
           "--grpc-port", "0", "--ready-file", str(ready)]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_for(ready, r"\}", proc)
        where = json.loads(ready.read_text())
        assert where["pid"] == proc.pid and re.fullmatch(r"127\.0\.0\.1:\d+", where["grpc"])
        lines = log.read_text().splitlines()
        banner = next(i for i, line in enumerate(lines) if line.startswith("ws-serve: serving"))
        assert f"serving {name} at {where['http']} and gRPC {where['grpc']} with 2 worker" in lines[banner]
        # start-up is not silent: progress lines while profiling, before the banner
        assert any(line.startswith("ws-serve: profiling SubNet 1/3") for line in lines[:banner]), lines
        # an untrained SuperNet: its accuracies are the MACs proxy, and the banner says so
        assert lines[banner].count("(MACs proxy, not measured)") == 3
        # the default backend names its sessions' threads; under OMP_WAIT_POLICY=PASSIVE they spin only
        # during a forward
        threads = next(line for line in lines if line.startswith("ws-serve: ONNX Runtime intra-op threads"))
        assert threads.endswith("idle threads spin: run") and threads.count(": ") == 5, threads
        base = where["http"]
        with httpx.Client(base_url=base, timeout=60) as http:
            deadline = time.monotonic() + 60
            while http.get("/v2/health/ready").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert http.get("/v2/models/ws_ofa_mbv3_035_32").status_code == 404  # published as --name
            meta = http.get(f"/v2/models/{name}").json()
            assert meta["inputs"][0]["shape"] == [-1, 3, 32, 32]
            with open(f"{ckpt}.served.json") as f:
                served = json.load(f)
            ids = {s["id"] for s in served["subnets"]}
            x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
            body = {"id": "e2e", "inputs": [{"name": "input", "shape": [2, 3, 32, 32], "datatype": "FP32",
                                             "data": x.ravel().tolist()}], "parameters": {"slo_ms": 4000}}
            for _ in range(3):
                r = http.post(f"/v2/models/{name}/infer", json=body)
                assert r.status_code == 200, r.text
                out = r.json()
                assert out["id"] == "e2e" and out["outputs"][0]["shape"] == [2, 10]
                assert out["parameters"]["subnet_id"] in ids
                assert np.isfinite(out["outputs"][0]["data"]).all()
            bad = http.post(f"/v2/models/{name}/infer", content=b"[")
            assert bad.status_code == 400
            metrics = http.get("/metrics").text
            assert 'ws_serve_requests_total{outcome="ok"} 3.0' in metrics
            assert "ws_serve_queue_length 0.0" in metrics and "ws_serve_slo_attainment 1.0" in metrics
        grpcclient = pytest.importorskip("tritonclient.grpc")
        client = grpcclient.InferenceServerClient(where["grpc"])
        inp = grpcclient.InferInput("input", [2, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer(name, [inp], parameters={"slo_ms": 4000})
        assert result.as_numpy("logits").shape == (2, 10)
        assert result.get_response().parameters["subnet_id"].string_param in ids
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # pragma: no cover - only if shutdown hangs
            proc.kill()
            raise
    assert proc.returncode == 0, log.read_text()
    assert "ws-serve: stopped" in log.read_text() and not ready.exists()  # the ready file goes with the server


def test_run_checks_the_grpc_port(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--model", "ws_ofa_mbv3_035_32", "--grpc-port", "70000"])
    assert "--grpc-port must be in [0, 65535] (0: any free port), got 70000" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["run", "--model", "ws_ofa_mbv3_035_32"], ["simulate"]])
def test_handling_cost_must_not_be_negative(command, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--query-cost-ms", "-0.5"])
    assert "--query-cost-ms: must be >= 0, got -0.5" in capsys.readouterr().err


@pytest.fixture
def no_work(monkeypatch):
    """Make loading a deployment fail the test: the checks must answer before any work."""
    def deploy(*args, **kwargs):
        raise AssertionError("the command loaded the model before checking its dependencies and device")

    monkeypatch.setattr(importlib.import_module("ws_serve.deploy"), "deploy", deploy)


def _without(monkeypatch, *modules):
    """Pretend ``modules`` are not installed (importlib.util.find_spec answers None for them)."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else find_spec(name, *a))


def _refused(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ws-serve: "), err  # one line
    return err.strip()


RUN = ["run", "--model", "ws_ofa_mbv3_035_32"]


def test_missing_optional_dependencies_are_named_with_their_install_hint(monkeypatch, capsys, no_work):
    _without(monkeypatch, "ray", "grpc", "torch_tensorrt", "onnxruntime")
    assert _refused(capsys, [*RUN, "--ray"]) == "ws-serve: --ray needs Ray: pip install 'ws-serve[ray]'"
    assert _refused(capsys, [*RUN, "--grpc-port", "0"]) == (
        "ws-serve: --grpc-port needs grpcio and tritonclient[grpc]: pip install 'ws-serve[grpc]'")
    assert _refused(capsys, [*RUN, "--backend", "tensorrt", "--device", "cpu"]) == (
        "ws-serve: --backend tensorrt needs Torch-TensorRT: pip install 'ws-serve[tensorrt]'")
    assert "--backend onnxruntime needs onnxruntime and onnx: pip install onnxruntime" in _refused(
        capsys, [*RUN, "--backend", "onnxruntime"])


def test_the_extras_named_in_hints_exist():
    from importlib.metadata import metadata

    assert {"ray", "grpc", "tensorrt"} <= set(metadata("ws-serve").get_all("Provides-Extra"))


def test_intra_op_threads_need_onnxruntime_on_the_cpu(capsys, no_work):
    err = _refused(capsys, [*RUN, "--backend", "eager", "--intra-op-threads", "1"])
    assert "--intra-op-threads sets how many threads ONNX Runtime runs on the CPU" in err
    assert "got --backend eager" in err
    with pytest.raises(SystemExit):
        main([*RUN, "--intra-op-threads", "0"])
    assert "--intra-op-threads: must be > 0, got 0" in capsys.readouterr().err
    err = _refused(capsys, [*RUN, "--backend", "eager", "--intra-op-spinning", "run"])
    assert "--intra-op-spinning sets how ONNX Runtime's threads wait on the CPU" in err
    assert "got --backend eager" in err
    with pytest.raises(SystemExit):
        main([*RUN, "--intra-op-spinning", "sometimes"])
    assert re.search(r"argument --intra-op-spinning: invalid choice: 'sometimes' \(choose from '?off'?, '?run'?, "
                     r"'?on'?\)", capsys.readouterr().err)  # argparse quotes the choices from Python 3.12.8 on


def test_the_parser_offers_the_library_s_backends_and_waiting_modes():
    # the parser spells them out (``--help`` imports no torch); they must stay the library's
    from ws_serve.backends import BACKENDS, DEFAULT_BACKEND, SPINNING

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    choices = {a.dest: a.choices for a in commands.choices["run"]._actions if a.choices is not None}
    assert set(choices["backend"]) == {DEFAULT_BACKEND, *BACKENDS}
    assert tuple(choices["intra_op_spinning"]) == SPINNING


def test_a_server_profiles_and_serves_onnx_runtime_with_one_set_of_options(monkeypatch):
    from ws_serve.cli import _backend_options

    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)

    def options(**given):
        args = dict(backend="auto", device="cpu", ray=False, workers=1, intra_op_threads=None,
                    intra_op_spinning=None)
        return _backend_options(argparse.Namespace(**(args | given)))

    assert options() == {"max_threads": 7}  # one core of 8 stays with the request handling
    assert options(workers=3, intra_op_spinning="run") == {"spinning": "run", "max_threads": 2}
    assert options(intra_op_threads=4) == {"threads": 4}  # fixed threads: no measurement, no cap
    assert options(backend="eager") == options(device="cuda") == options(ray=True) == {}


def test_devices_are_checked_before_any_work(monkeypatch, capsys, no_work):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = _refused(capsys, [*RUN, "--device", "cuda"])
    assert err.startswith("ws-serve: --device cuda: no usable CUDA GPU (") and err.endswith("; available: cpu")
    assert "no usable CUDA GPU" in _refused(capsys, ["profile", "--model", "ws_ofa_mbv3_035_32", "--device", "cuda"])
    assert _refused(capsys, [*RUN, "--device", "gpu"]) == (
        "ws-serve: --device must be cpu, cuda, cuda:<index> or mps, got 'gpu'")
    assert _refused(capsys, [*RUN, "--backend", "cudagraphs"]) == (
        "ws-serve: --backend cudagraphs runs on CUDA GPUs; --device is cpu (use --device cuda)")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert _refused(capsys, [*RUN, "--device", "cuda:1"]) == (
        "ws-serve: --device cuda:1: there is no such GPU; available: cpu, cuda:0")
    assert _refused(capsys, [*RUN, "--device", "cuda", "--workers", "2"]) == (
        "ws-serve: --device cuda --workers 2 needs 2 GPUs (one per worker, cuda:0..), 1 available: cpu, cuda:0")
    assert _refused(capsys, [*RUN, "--device", "cuda", "--backend", "onnxruntime"]).startswith(
        "ws-serve: --backend onnxruntime runs on the CPU; --device is cuda")


def test_run_checks_the_model_name(capsys):
    with pytest.raises(SystemExit) as info:
        main([*RUN, "--name", "my model"])
    assert info.value.code == 2
    assert ("--name: a model name must be 1 to 128 characters from A-Z a-z 0-9 _ . -, starting with a letter or "
            "digit, and not 'stats'; got 'my model'") in capsys.readouterr().err
    assert build_parser().parse_args([*RUN, "--name", "classifier-1.2"]).name == "classifier-1.2"
    assert build_parser().parse_args(RUN).name is None  # default: the SuperNet's name


def test_python_dash_m_ws_serve_is_the_command():
    out = subprocess.run([sys.executable, "-m", "ws_serve", "run", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "usage: ws-serve run" in out.stdout and "--name" in out.stdout


def test_the_banner_labels_proxy_accuracies(deployment):
    from types import SimpleNamespace

    assert deployment.served.accuracy_source == PROXY_ACCURACY
    line = serving_banner(deployment, "http://127.0.0.1:8000", None, 1, "slackfit", 100)
    assert line.startswith(f"serving {deployment.model.name} at http://127.0.0.1:8000 with 1 worker(s)")
    for s in deployment.served:
        assert f"{s.id}: acc {s.accuracy:.3g} (MACs proxy, not measured)" in line
    measured = ServedSet(deployment.served.subnets, "measured accuracy")
    line = serving_banner(SimpleNamespace(served=measured, model=deployment.model), "http://h:1", "h:2", 2, "p", 50)
    assert "proxy" not in line and "and gRPC h:2 with 2 worker(s)" in line
    assert f"acc {measured.subnets[0].accuracy:.3g} (measured accuracy)" in line


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_replay_command_over_http_and_grpc(transport, deployment, serve_in_thread, tmp_path, capsys):
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is needed for the gRPC replay")
    from ws_serve.deploy import build_app, make_local_workers
    from ws_serve.grpc_server import add_grpc_endpoint

    app, _ = build_app(deployment, make_local_workers(deployment, workers=1), "slackfit")
    endpoint = add_grpc_endpoint(app, "127.0.0.1", 0, grace_s=1)
    trace = tmp_path / "t.csv"
    Trace(np.linspace(0, 0.5, 10)).save(trace)
    with serve_in_thread(app) as address:
        where = ["--grpc", endpoint.address] if transport == "grpc" else ["--url", f"http://{address}"]
        assert main(["replay", *where, "--model", deployment.model.name, "--trace", str(trace),
                     "--slo-ms", "5000"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sent"] == 10 and report["ok"] == 10 and report["slo_attainment"] == 1.0
    assert report["statuses"] == ({"OK": 10} if transport == "grpc" else {"200": 10})

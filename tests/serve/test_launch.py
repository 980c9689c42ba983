from __future__ import annotations

import json
import os

import httpx
import pytest
import timm

from ws_core.checkpoint import save_checkpoint
from ws_serve.launch import ServerEndpoints, read_ready_file, server_endpoints, server_process, write_ready_file


def test_server_process_yields_a_ready_loopback_server_and_stops_it(tmp_path):
    ckpt = save_checkpoint(timm.create_model("ws_ofa_mbv3_035_32", num_classes=10), tmp_path / "net.safetensors")
    log = tmp_path / "serve.log"
    args = ["--checkpoint", str(ckpt), "--subnets", "2", "--max-batch", "1", "--profile-repeats", "1"]
    with server_process(args, log) as url:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    assert "ws-serve: stopped" in log.read_text()           # SIGTERM: graceful shutdown, not a kill
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v2/health/live", timeout=2)

    # the addresses come from the ready file the server writes once it listens, gRPC included
    grpcclient = pytest.importorskip("tritonclient.grpc")
    with server_endpoints([*args, "--grpc-port", "0"], log) as ends:
        assert ends.http.startswith("http://127.0.0.1:") and ends.grpc.startswith("127.0.0.1:")
        assert ends.pid != os.getpid() and f"and gRPC {ends.grpc}" in log.read_text()
        client = grpcclient.InferenceServerClient(ends.grpc)
        assert client.is_server_ready() and client.is_model_ready("ws_ofa_mbv3_035_32")
        client.close()
    assert not [p for p in tmp_path.iterdir() if "ready" in p.name or p.name.endswith(".tmp")]


def test_ready_file_is_written_whole_and_read_back(tmp_path):
    path = tmp_path / "ready.json"
    assert read_ready_file(path) is None                    # not there yet: the launcher keeps waiting
    ends = write_ready_file(path, "127.0.0.1", 8000, None)
    assert json.loads(path.read_text()) == {"http": "http://127.0.0.1:8000", "grpc": None, "pid": os.getpid()}
    assert read_ready_file(path) == ends == ServerEndpoints("http://127.0.0.1:8000", None, os.getpid())
    assert write_ready_file(path, "::1", 8000, 8001).grpc == "[::1]:8001"
    assert [p.name for p in tmp_path.iterdir()] == ["ready.json"]  # no temporary file left


def test_server_process_that_exits_early_raises_with_its_log(tmp_path):
    log = tmp_path / "serve.log"
    with (
        pytest.raises(RuntimeError, match=r"(?s)exited with status \d+ before serving.*missing\.safetensors"),
        server_process(["--checkpoint", str(tmp_path / "missing.safetensors")], log, start_timeout_s=120),
    ):
        pass  # pragma: no cover - never reached

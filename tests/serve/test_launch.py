from __future__ import annotations

import httpx
import pytest
import timm

from ws_core.checkpoint import save_checkpoint
from ws_serve.launch import server_process


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


def test_server_process_that_exits_early_raises_with_its_log(tmp_path):
    log = tmp_path / "serve.log"
    with (
        pytest.raises(RuntimeError, match=r"(?s)exited with status \d+ before serving.*missing\.safetensors"),
        server_process(["--checkpoint", str(tmp_path / "missing.safetensors")], log, start_timeout_s=120),
    ):
        pass  # pragma: no cover - never reached

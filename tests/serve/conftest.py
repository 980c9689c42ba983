from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
import timm
import torch
import uvicorn

import ws_core  # noqa: F401  (registers the ws_* SuperNets)


@pytest.fixture
def tiny_net():
    """The fast 32x32 OFA MobileNetV3 SuperNet, seeded, in eval mode."""
    torch.manual_seed(0)
    return timm.create_model("ws_ofa_mbv3_035_32", num_classes=10).eval()


@pytest.fixture
def configs(tiny_net):
    """min, max and three random SubNets of the tiny SuperNet."""
    g = torch.Generator().manual_seed(1)
    space = tiny_net.space
    return [space.min(), space.max(), *(space.sample(g) for _ in range(3))]


@pytest.fixture
def loader():
    """Four batches of generated images (a stand-in for a calibration loader)."""
    g = torch.Generator().manual_seed(2)
    return [torch.randn(8, 3, 32, 32, generator=g) * 1.5 + 0.3 for _ in range(4)]


@contextlib.contextmanager
def _serve_in_thread(app):
    """Run ``app`` with uvicorn on a free loopback port in a background thread; yields ``host:port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="session")
def serve_in_thread():
    """Context manager factory: ``with serve_in_thread(app) as address: ...``."""
    return _serve_in_thread


@pytest.fixture(scope="session")
def deployment():
    """The tiny SuperNet deployed with 3 served SubNets, profiled at batch 1..4 (quickly)."""
    from ws_serve.deploy import deploy

    return deploy("ws_ofa_mbv3_035_32", subnets=3, max_batch=4, profile_warmup=0, profile_repeats=1)

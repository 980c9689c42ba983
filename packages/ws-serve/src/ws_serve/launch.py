"""Run ``ws-serve run`` as a child process for the length of a ``with`` block.

For scripts, benchmarks and pipelines that need a real server process (its own interpreter, GIL and
HTTP stack) rather than an in-process app::

    with server_process(["--checkpoint", "net.safetensors", "--policy", "slackfit"], log="serve.log") as url:
        replay_sync(url, "ws_ofa_mbv3_035_32", trace, slo_ms=100)

    with server_endpoints(["--model", "ws_ofa_mbv3_035_32", "--grpc-port", "0"], log="serve.log") as ends:
        ends.http, ends.grpc        # 'http://127.0.0.1:PORT', '127.0.0.1:PORT'

The server binds 127.0.0.1 on free ports (unless the arguments say otherwise) and tells where through
its ready file (``ws-serve run --ready-file PATH``: JSON ``{"http": URL, "grpc": "HOST:PORT" or null,
"pid": PID}``, written atomically once it listens); the block starts once ``/v2/health/ready`` answers
200. On exit the server gets SIGTERM, answers every request it accepted and stops (killed after
``stop_timeout_s``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ws_core.io import atomic_write_json

__all__ = ["ServerEndpoints", "read_ready_file", "server_endpoints", "server_process", "write_ready_file"]


@dataclass(frozen=True)
class ServerEndpoints:
    """Where a ``ws-serve run`` process listens: the HTTP base URL, the gRPC ``host:port`` (or ``None``)."""

    http: str
    grpc: str | None
    pid: int


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def write_ready_file(path: str | os.PathLike, host: str, http_port: int, grpc_port: int | None) -> ServerEndpoints:
    """Write the ready file of this server process (atomically: readers see all of it or nothing)."""
    ends = ServerEndpoints(f"http://{_hostport(host, http_port)}",
                           None if grpc_port is None else _hostport(host, grpc_port), os.getpid())
    atomic_write_json(path, {"http": ends.http, "grpc": ends.grpc, "pid": ends.pid})
    return ends


def read_ready_file(path: str | os.PathLike) -> ServerEndpoints | None:
    """The endpoints in a ready file, or ``None`` while it does not exist yet."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    return ServerEndpoints(data["http"], data["grpc"], int(data["pid"]))


def _wait_ready_file(proc: subprocess.Popen, ready: Path, log: Path, deadline: float) -> ServerEndpoints:
    while time.monotonic() < deadline:
        ends = read_ready_file(ready)
        if ends is not None:
            if ends.pid != proc.pid:
                raise RuntimeError(f"{ready} names process {ends.pid}, the server started is {proc.pid}")
            return ends
        if proc.poll() is not None:
            raise RuntimeError(f"ws-serve exited with status {proc.returncode} before serving; its log ({log}) "
                               f"ends:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"ws-serve did not start serving in time; see {log}")


@contextmanager
def server_endpoints(args: Sequence[str], log: str | os.PathLike, *, start_timeout_s: float = 300.0,
                     stop_timeout_s: float = 60.0, env: dict[str, str] | None = None) -> Iterator[ServerEndpoints]:
    """``ws-serve run ARGS`` (``--host 127.0.0.1 --port 0`` unless given) with output to ``log``;
    yields its :class:`ServerEndpoints` once the server is ready. Raises ``RuntimeError`` with the log's
    tail if the process exits or is not ready within ``start_timeout_s``."""
    import httpx

    args = list(args)
    if "--host" not in args:
        args += ["--host", "127.0.0.1"]
    if "--port" not in args:
        args += ["--port", "0"]
    log = Path(log)
    environment = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    environment.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with tempfile.TemporaryDirectory(prefix="ws-serve-") as tmp:
        ready = Path(tmp) / "ready.json"
        with open(log, "w") as f:
            proc = subprocess.Popen([sys.executable, "-m", "ws_serve.cli", "run", *args, "--ready-file", str(ready)],
                                    stdout=f, stderr=subprocess.STDOUT, env=environment)
        try:
            deadline = time.monotonic() + start_timeout_s
            ends = _wait_ready_file(proc, ready, log, deadline)
            with httpx.Client(base_url=ends.http, timeout=10) as http:
                while http.get("/v2/health/ready").status_code != 200:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"ws-serve at {ends.http} never became ready; see {log}")
                    time.sleep(0.1)
            yield ends
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def server_process(args: Sequence[str], log: str | os.PathLike, *, start_timeout_s: float = 300.0,
                   stop_timeout_s: float = 60.0, env: dict[str, str] | None = None) -> Iterator[str]:
    """:func:`server_endpoints`, yielding the HTTP base URL."""
    with server_endpoints(args, log, start_timeout_s=start_timeout_s, stop_timeout_s=stop_timeout_s,
                          env=env) as ends:
        yield ends.http

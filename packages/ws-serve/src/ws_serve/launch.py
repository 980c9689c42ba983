"""Run ``ws-serve run`` as a child process for the length of a ``with`` block.

For scripts, benchmarks and pipelines that need a real server process (its own interpreter, GIL and
HTTP stack) rather than an in-process app::

    with server_process(["--checkpoint", "net.safetensors", "--policy", "slackfit"], log="serve.log") as url:
        replay_sync(url, "ws_ofa_mbv3_035_32", trace, slo_ms=100)

The server binds 127.0.0.1 on a free port (unless the arguments say otherwise); the block receives its
base URL once ``/v2/health/ready`` answers 200. On exit the server gets SIGTERM, answers every request
it accepted and stops (killed after ``stop_timeout_s``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["server_process"]

_ADDRESS = re.compile(r"at (http://\S+?:\d+) with")


def _address(proc: subprocess.Popen, log: Path, deadline: float) -> str:
    while time.monotonic() < deadline:
        m = _ADDRESS.search(log.read_text(errors="replace"))
        if m:
            return m.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"ws-serve exited with status {proc.returncode} before serving; its log ({log}) "
                               f"ends:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"ws-serve did not start serving in time; see {log}")


@contextmanager
def server_process(args: Sequence[str], log: str | os.PathLike, *, start_timeout_s: float = 300.0,
                   stop_timeout_s: float = 60.0, env: dict[str, str] | None = None) -> Iterator[str]:
    """``ws-serve run ARGS`` (``--host 127.0.0.1 --port 0`` unless given) with output to ``log``;
    yields the base URL once the server is ready. Raises ``RuntimeError`` with the log's tail if the
    process exits or is not ready within ``start_timeout_s``."""
    import httpx

    args = list(args)
    if "--host" not in args:
        args += ["--host", "127.0.0.1"]
    if "--port" not in args:
        args += ["--port", "0"]
    log = Path(log)
    environment = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    environment.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "ws_serve.cli", "run", *args], stdout=f,
                                stderr=subprocess.STDOUT, env=environment)
    try:
        deadline = time.monotonic() + start_timeout_s
        url = _address(proc, log, deadline)
        with httpx.Client(base_url=url, timeout=10) as http:
            while http.get("/v2/health/ready").status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ws-serve at {url} never became ready; see {log}")
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from ws_fed.task import build_supernet, load_digits


@pytest.fixture
def net():
    """The tiny OFA MobileNetV3 SuperNet for 1×8×8 digits, seeded."""
    return build_supernet("ws_ofa_mbv3_035_32", image_size=8, seed=0)


@pytest.fixture(scope="session")
def digits():
    return load_digits(image_size=8, seed=0)


class FlowerSandbox:
    """What a test that runs Flower's own processes on loopback starts from: a private ``FLWR_HOME`` and Ray temp
    folder, and an environment carrying a token that every process the test starts, and each of their descendants,
    inherits (so the test can find them, orphans included, in ``/proc``)."""

    bin_dir = Path(sys.executable).parent
    app_dir = Path(__file__).resolve().parents[2] / "packages" / "ws-fed"

    def __init__(self, tmp_path: Path) -> None:
        self.token = uuid.uuid4().hex
        self.home = tmp_path / "flwr-home"
        self.home.mkdir()
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="wsfed-ray-"))  # short: Ray's socket paths are length-limited
        self.env = {
            **os.environ,
            "FLWR_HOME": str(self.home),
            "RAY_TMPDIR": str(self.ray_tmp),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_TELEMETRY_ENABLED": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            "OMP_NUM_THREADS": "1",
            "WS_FED_TEST_TOKEN": self.token,
            # as `source .venv/bin/activate` does: the SuperLink and SuperNodes start flower-superexec, flwr-simulation
            # and the other flwr-* helpers by name
            "PATH": self._search_path(),
        }

    @classmethod
    def _search_path(cls) -> str:
        return f"{cls.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"

    @classmethod
    def executable(cls, name: str) -> str | None:
        """``name`` next to this Python (the virtual environment's ``bin``) or on ``PATH``."""
        return shutil.which(name, path=cls._search_path())

    def require(self, *names: str) -> None:
        """Skip the test unless every executable in ``names`` is found."""
        missing = [name for name in names if self.executable(name) is None]
        if missing:
            pytest.skip(f"Flower executables not found next to {sys.executable} or on PATH: {missing}")

    @staticmethod
    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def connect(self, name: str, port: int) -> None:
        """Make the SuperLink on ``port`` (loopback, insecure) ``flwr``'s default connection, called ``name``."""
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')

    def wait_healthy(self, port: int, procs: Iterable[subprocess.Popen], log: Callable[[], str],
                     timeout: float = 60.0) -> None:
        """Wait until the SuperLink on ``port`` answers ``/health``; fail, with ``log()``, as soon as one of ``procs``
        has exited, or after ``timeout`` seconds."""
        import httpx  # a Flower dependency

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                raise AssertionError(f"a Flower process exited before the SuperLink on port {port} was up\n{log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).is_success:
                    return
            time.sleep(0.5)
        raise AssertionError(f"the SuperLink on port {port} is not up after {timeout:.0f} s\n{log()}")

    def live_processes(self) -> dict[int, tuple[int, bool]]:
        """Live (not zombie) processes other than this one: pid -> (session id, whether it carries the token)."""
        needle = f"WS_FED_TEST_TOKEN={self.token}".encode()
        found: dict[int, tuple[int, bool]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                state, _ppid, _pgrp, session = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
                if state != "Z":
                    found[int(entry.name)] = (int(session), needle in (entry / "environ").read_bytes().split(b"\0"))
            except (OSError, ValueError):
                continue
        return found


@pytest.fixture
def flower_sandbox(tmp_path):
    """A :class:`FlowerSandbox` in ``tmp_path``; its Ray temp folder is removed afterwards. Skipped without ``/proc``
    (Linux), which finding the test's processes needs."""
    if not Path("/proc/self/environ").exists():
        pytest.skip("finding the processes a test started needs /proc (Linux)")
    sandbox = FlowerSandbox(tmp_path)
    yield sandbox
    shutil.rmtree(sandbox.ray_tmp, ignore_errors=True)

"""``flwr run`` on Flower's two engines, with real processes on loopback:

* the simulation engine (a SuperLink with ``--simulation``; virtual SuperNodes on the Ray backend);
* the deployment engine (a SuperLink and two SuperNodes, each SuperNode holding one partition).

Each test starts its processes in their own sessions with a private ``FLWR_HOME`` and Ray temp folder,
runs the ws-fed Flower App for two rounds, checks the ServerApp's ``summary.json``, and shuts every
process it started down (including Ray's), then checks that none is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parents[2] / "packages" / "ws-fed"
BIN_DIR = Path(sys.executable).parent
RUN_TIMEOUT_S = 420


def executable(name: str) -> str | None:
    return shutil.which(name, path=f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FlowerProcesses:
    """Processes started for one test; every descendant carries a token in its environment."""

    def __init__(self, tmp_path: Path) -> None:
        self.token = uuid.uuid4().hex
        self.home = tmp_path / "flwr-home"
        self.home.mkdir()
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="wsfed-ray-"))  # short: Ray's socket paths are length-limited
        self.env = {
            **os.environ,
            "FLWR_HOME": str(self.home),
            "RAY_TMPDIR": str(self.ray_tmp),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_TELEMETRY_ENABLED": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            "OMP_WAIT_POLICY": "PASSIVE",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "WS_FED_TEST_TOKEN": self.token,
            # the SuperLink and SuperNodes start flower-superexec / flwr-* helpers by name
            "PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}-{len(self.procs)}.log", "wb")  # noqa: SIM115 (closed in shutdown)
        proc = subprocess.Popen([executable(name), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def connect(self, name: str, port: int) -> None:
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')

    def wait_healthy(self, port: int, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a Flower process exited early\n{self.tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"SuperLink on port {port} not healthy after {timeout:.0f} s\n{self.tail()}")

    def marked_pids(self) -> list[int]:
        """Pids of live processes (not zombies) whose environment carries this test's token."""
        needle = f"WS_FED_TEST_TOKEN={self.token}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                marked = needle in (entry / "environ").read_bytes().split(b"\0")
                if marked and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def run_app(self, connection: str, run_config: str, federation_config: str | None,
                summary: Path) -> list[str]:
        """``flwr run`` the ws-fed app; return its output once the ServerApp has written ``summary``."""
        cmd = [executable("flwr"), "run", str(APP_DIR), connection, "--run-config", run_config, "--stream"]
        if federation_config:
            cmd += ["--federation-config", federation_config]
        cli = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True, text=True)
        self.procs.append(cli)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(ln) for ln in cli.stdout], daemon=True).start()
        out: list[str] = []
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline and not summary.exists():
            try:
                out.append(lines.get(timeout=1.0))
            except queue.Empty:
                if cli.poll() is not None and lines.empty():
                    break
        while not lines.empty():
            out.append(lines.get())
        assert summary.exists(), "the run did not finish:\n" + "".join(out[-60:]) + self.tail()
        return out

    def tail(self) -> str:
        parts = []
        for log in sorted(self.logs.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"\n--- {log.name}\n" + "\n".join(text))
        return "".join(parts)

    def shutdown(self) -> list[int]:
        """Stop every process this test started (SuperNodes and CLI first), then anything left with the token."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            if getattr(proc, "log", None):
                proc.log.close()
        deadline = time.monotonic() + 30
        while (left := self.marked_pids()) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM if time.monotonic() < deadline - 10 else signal.SIGKILL)
            time.sleep(1.0)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        return self.marked_pids()


@pytest.fixture
def flower(tmp_path):
    missing = [n for n in ("flwr", "flower-superlink", "flower-supernode") if executable(n) is None]
    if missing:
        pytest.skip(f"Flower executables not found next to {sys.executable} or on PATH: {missing}")
    if not Path("/proc/self/environ").exists():
        pytest.skip("process clean-up check needs /proc (Linux)")
    procs = FlowerProcesses(tmp_path)
    yield procs
    left = procs.shutdown()
    assert left == [], f"processes left running: {left}"


def run_config(out: Path) -> str:
    return (f"num-server-rounds=2 local-steps=1 batch-size=16 min-train-nodes=2 min-available-nodes=2 "
            f"bn-batches=1 output-dir='{out}'")


def check_summary(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    rounds = summary["rounds"]
    assert [r["accepted"] for r in rounds] == [2, 2] and all(r["aggregated"] for r in rounds)
    assert summary["cost"]["client_macs"] > 0 and summary["cost"]["bytes_up"] == summary["cost"]["bytes_down"]
    assert (out / "supernet.safetensors").stat().st_size > 1_000_000
    return summary


@pytest.mark.slow
def test_flwr_run_on_the_simulation_engine(flower, tmp_path):
    pytest.importorskip("ray", reason="the simulation engine needs flwr[simulation] (Ray)")
    port = free_port()
    flower.start("flower-superlink", "--insecure", "--simulation", "--host", "127.0.0.1", "--port", str(port),
                 "--disable-runtime-dependency-installation")
    flower.wait_healthy(port)
    flower.connect("ws-fed-sim", port)
    out = tmp_path / "out"
    lines = flower.run_app("ws-fed-sim", run_config(out),
                           "num-supernodes=3 client-resources-num-cpus=1 init-args-num-cpus=1", out / "summary.json")
    assert any("Starting Flower Simulation" in ln for ln in lines)
    check_summary(out)


@pytest.mark.slow
def test_flwr_run_on_the_deployment_engine(flower, tmp_path):
    port = free_port()
    flower.start("flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(port),
                 "--disable-runtime-dependency-installation")
    flower.wait_healthy(port)
    for i in range(2):
        flower.start("flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{port}",
                     "--port", str(free_port()), "--node-config", f"partition-id={i} num-partitions=2")
    flower.connect("ws-fed-deploy", port)
    out = tmp_path / "out"
    flower.run_app("ws-fed-deploy", run_config(out), None, out / "summary.json")
    summary = check_summary(out)
    nodes = {node for r in summary["rounds"] for node in r["subnets"]}
    assert len(nodes) == 2  # both SuperNodes trained

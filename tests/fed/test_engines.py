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
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

RUN_TIMEOUT_S = 420


class FlowerProcesses:
    """Processes started for one test in a ``FlowerSandbox`` (conftest); every descendant carries its token."""

    def __init__(self, sandbox, tmp_path: Path) -> None:
        self.sandbox = sandbox
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.env = {**sandbox.env, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}-{len(self.procs)}.log", "wb")  # noqa: SIM115 (closed in shutdown)
        proc = subprocess.Popen([self.sandbox.executable(name), *args], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def wait_healthy(self, port: int) -> None:
        self.sandbox.wait_healthy(port, self.procs, self.tail)

    def marked_pids(self) -> list[int]:
        """Pids of live processes (not zombies) whose environment carries this test's token."""
        return [pid for pid, (_session, marked) in self.sandbox.live_processes().items() if marked]

    def run_app(self, connection: str, run_config: str, federation_config: str | None,
                summary: Path) -> list[str]:
        """``flwr run`` the ws-fed app; return its output once the ServerApp has written ``summary``."""
        cmd = [self.sandbox.executable("flwr"), "run", str(self.sandbox.app_dir), connection,
               "--run-config", run_config, "--stream"]
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
        return self.marked_pids()


@pytest.fixture
def flower(flower_sandbox, tmp_path):
    flower_sandbox.require("flwr", "flower-superlink", "flower-supernode")
    procs = FlowerProcesses(flower_sandbox, tmp_path)
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
    port = flower.sandbox.free_port()
    flower.start("flower-superlink", "--insecure", "--simulation", "--host", "127.0.0.1", "--port", str(port),
                 "--disable-runtime-dependency-installation")
    flower.wait_healthy(port)
    flower.sandbox.connect("ws-fed-sim", port)
    out = tmp_path / "out"
    lines = flower.run_app("ws-fed-sim", run_config(out),
                           "num-supernodes=3 client-resources-num-cpus=1 init-args-num-cpus=1", out / "summary.json")
    assert any("Starting Flower Simulation" in ln for ln in lines)
    check_summary(out)


@pytest.mark.slow
def test_flwr_run_on_the_deployment_engine(flower, tmp_path):
    port = flower.sandbox.free_port()
    flower.start("flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(port),
                 "--disable-runtime-dependency-installation")
    flower.wait_healthy(port)
    for i in range(2):
        flower.start("flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{port}",
                     "--port", str(flower.sandbox.free_port()), "--node-config", f"partition-id={i} num-partitions=2")
    flower.sandbox.connect("ws-fed-deploy", port)
    out = tmp_path / "out"
    flower.run_app("ws-fed-deploy", run_config(out), None, out / "summary.json")
    summary = check_summary(out)
    nodes = {node for r in summary["rounds"] for node in r["subnets"]}
    assert len(nodes) == 2  # both SuperNodes trained

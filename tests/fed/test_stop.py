"""Stopping a ``flwr run`` of ws-fed the way the README says leaves no process behind.

ws-fed itself starts no processes: the README's launch path is Flower's (a SuperLink in simulation mode,
which starts ``flower-superexec``, which starts ``flwr-simulation``, which starts Ray). The README stops a
run with ``flwr stop <run-id> [superlink]`` and afterwards the SuperLink with SIGTERM. This test does exactly
that on loopback, with a private ``FLWR_HOME`` and Ray temp folder: it waits until Ray's ClientApp actor
runs, stops the run, and checks that ``flwr-simulation`` and Ray's core processes exit at once, that Ray's
agents follow (they notice their raylet is gone and exit on their own), and that SIGTERM to the SuperLink
then leaves nothing.

The test finds its processes by a token in their environment and by the sessions of those processes, so
orphans re-parented to init are found too, and so are Ray's agents, which overwrite their environment
with their process title.

Slow (Ray starts in 10-30 s on 2 cores, and its agents take up to about two minutes to exit after a
stop); skipped when the Flower executables or Ray (``ws-fed[simulation]``) are not installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

EXECUTABLES = ("flwr", "flower-superlink", "flower-superexec", "flwr-simulation")
FEDERATION = "num-supernodes=2 client-resources-num-cpus=1 init-args-num-cpus=1"  # one Ray actor at a time
RAY_UP_TIMEOUT_S = 240
RUN_EXIT_TIMEOUT_S = 60  # flwr-simulation, raylet, GCS and the workers
RAY_AGENTS_EXIT_TIMEOUT_S = 240  # Ray's dashboard and runtime-env agents poll their raylet, then exit
SUPERLINK_EXIT_TIMEOUT_S = 30
RAY_CORE = ("flwr-simulation", "raylet", "gcs_server", "ray::ClientAppActor", "ray::IDLE", "ray/_private/",
            "ray/autoscaler/", "ray/dashboard/dashboard.py")


def _is_flower_server(cmd: str) -> bool:
    return "flower-superlink" in cmd or "flower-superexec" in cmd


class Tree:
    """The processes one test starts: those with a token in their environment, and everything in their sessions.

    Every process the test starts begins a new session; Flower's and Ray's processes inherit the token, and
    stay in their session when orphaned, also after overwriting their environment (``setproctitle``).
    """

    def __init__(self, sandbox, tmp_path: Path) -> None:
        self.sandbox = sandbox  # a FlowerSandbox (conftest)
        self.log_path = tmp_path / "superlink.log"
        self.sessions: set[int] = set()
        self.superlink: subprocess.Popen | None = None

    def processes(self) -> dict[int, str]:
        """Live (not zombie) processes of this test: pid -> command line."""
        own = {os.getsid(0), os.getpid()}
        stats = self.sandbox.live_processes()  # pid -> (session, carries the token)
        self.sessions |= {session for session, marked in stats.values() if marked} - own
        found = {}
        for pid, (session, marked) in stats.items():
            if marked or session in self.sessions:
                with contextlib.suppress(OSError):
                    found[pid] = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                        errors="replace")
        return found

    def wait_for(self, done: Callable[[dict[int, str]], bool], timeout: float, what: str) -> float:
        """Poll ``done(processes)`` until true; return the seconds it took."""
        start = time.monotonic()
        while not done(procs := self.processes()):
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{what} after {timeout:.0f} s; still running:\n{self.describe(procs)}\n"
                                     f"{self.superlink_log()}")
            time.sleep(0.5)
        return time.monotonic() - start

    def wait_healthy(self, port: int) -> None:
        self.sandbox.wait_healthy(port, [self.superlink], self.superlink_log)

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([self.sandbox.executable("flwr"), *args], env=self.sandbox.env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=timeout, check=False, start_new_session=True)

    def superlink_log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "--- SuperLink output (last lines)\n" + "\n".join(text.splitlines()[-25:])

    @staticmethod
    def describe(procs: dict[int, str]) -> str:
        return "\n".join(f"{pid}: {cmd[:160]}" for pid, cmd in sorted(procs.items()))

    def kill_all(self) -> None:
        """Last resort (also when the test failed): SIGKILL whatever of this test is still running."""
        for _ in range(20):
            left = self.processes()
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        if self.superlink is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.superlink.wait(timeout=10)


@pytest.fixture
def tree(flower_sandbox, tmp_path):
    flower_sandbox.require(*EXECUTABLES)
    t = Tree(flower_sandbox, tmp_path)
    yield t
    t.kill_all()


@pytest.mark.slow
def test_flwr_stop_then_sigterm_to_the_superlink_leaves_no_process(tree):
    pytest.importorskip("ray", reason="the simulation engine needs Ray: pip install 'ws-fed[simulation]'")
    sandbox = tree.sandbox
    port = sandbox.free_port()
    with tree.log_path.open("wb") as log:
        tree.superlink = subprocess.Popen(
            [sandbox.executable("flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1",
             "--port", str(port), "--disable-runtime-dependency-installation"],
            env=sandbox.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    sandbox.connect("sim", port)

    # Submit a run far longer than the test (the submission returns at once; the run goes on in flwr-simulation).
    tree.wait_healthy(port)
    submitted = tree.flwr("run", str(sandbox.app_dir), "sim", "--format", "json",
                          "--run-config", "num-server-rounds=1000 local-steps=1 batch-size=8",
                          "--federation-config", FEDERATION)
    out = submitted.stdout
    reply = json.loads(out[out.index("{"):]) if "{" in out else {}
    assert reply.get("success"), f"flwr run failed:\n{submitted.stdout}{submitted.stderr}{tree.superlink_log()}"
    run_id = reply["run-id"]

    simulation_seen = False

    def ray_actor_runs(procs: dict[int, str]) -> bool:
        nonlocal simulation_seen
        simulating = any("flwr-simulation" in cmd for cmd in procs.values())
        if simulation_seen and not simulating:  # fail at once, with the run's log, instead of at the timeout
            log = tree.flwr("log", run_id, "sim", "--show").stdout[-3000:]
            raise AssertionError(f"the run ended before Ray's ClientApp actor ran:\n{log}")
        simulation_seen |= simulating
        return any("ray::ClientAppActor" in cmd for cmd in procs.values())

    tree.wait_for(ray_actor_runs, RAY_UP_TIMEOUT_S, "Ray's ClientApp actor never started")
    started = tree.processes()
    assert any("raylet" in cmd for cmd in started.values())
    assert any("ray::DashboardAgent" in cmd or "ray::RuntimeEnvAgent" in cmd for cmd in started.values()), (
        "Ray's agents not found: the test would not see them left behind\n" + tree.describe(started))

    stopped = tree.flwr("stop", run_id, "sim")
    assert stopped.returncode == 0 and f"Run {run_id} successfully stopped" in stopped.stdout, stopped.stdout
    core = tree.wait_for(lambda procs: not any(name in cmd for cmd in procs.values() for name in RAY_CORE),
                         RUN_EXIT_TIMEOUT_S, "`flwr stop` left flwr-simulation or Ray's core processes")
    agents = tree.wait_for(lambda procs: all(_is_flower_server(cmd) for cmd in procs.values()),
                           RAY_AGENTS_EXIT_TIMEOUT_S, "`flwr stop` left Ray's agents")
    print(f"after `flwr stop`: flwr-simulation and Ray's core processes exited in {core:.1f} s, "
          f"Ray's agents {agents:.1f} s later")

    tree.superlink.send_signal(signal.SIGTERM)
    tree.wait_for(lambda procs: not procs, SUPERLINK_EXIT_TIMEOUT_S, "SIGTERM to the SuperLink left processes")
    assert tree.superlink.wait(timeout=10) is not None

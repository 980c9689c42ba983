"""A worker killed mid-trace: ws-serve with Ray actor workers, one actor's process killed halfway through a replay.

One ws-serve server process with two Ray actor workers (SlackFit over a 6-SubNet Pareto served set, each
worker a :class:`ws_serve.ray_worker.RayWorker` running the default backend), driven by
``ws_serve.loadgen.replay`` (KServe v2 requests with binary tensor data, latency at the client). The
server process is what ``ws-serve run --ray --workers 2`` builds (``deploy``, ``RayWorker``, ``build_app``,
uvicorn on 127.0.0.1), started by this script in a child process of its own (``--serve-child``) because
``ws-serve run --ray`` stops at start-up: it gathers the actors' readiness outside the event loop that
awaits it (asyncio "The future belongs to a different loop"). The benchmark:

1. warm-up, then the mean rate: ``--load`` × the capacity of the two-worker server
   (``ws_serve.calibration.measure_capacity``: the highest steady rate with 95 % SLO attainment), unless
   ``--rate`` is given;
2. **control** — the bursty trace with both workers alive;
3. **kill** — the same trace on the same server; at ``--kill-at`` × its duration the benchmark sends
   SIGKILL to one actor's process (found among the server's descendants by its process title
   ``ray::SubNetActActor``), as a crashed worker process would die. The router sees the actor error on
   that worker's batch in flight, removes the worker and retries the batch on the other (once).

Reported per run: what was lost (error statuses, transport errors), SLO attainment overall, before and
after the kill, latency percentiles, the server's own outcome counters (``/metrics``) and the workers
alive at the end; then SLO attainment per time bin.

    python benchmarks/serve_worker_kill.py [--rate Q] [--load 0.7] [--duration 30] [--slo-ms 250]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import torch

from serve_rayserve import descendants
from ws_core.checkpoint import save_checkpoint
from ws_serve.calibration import measure_capacity
from ws_serve.deploy import load_supernet, served_set_path
from ws_serve.launch import read_ready_file, write_ready_file
from ws_serve.loadgen import replay_sync
from ws_serve.profile import pareto_served_set
from ws_serve.traces import bursty_trace

MODEL = "ws_ofa_mbv3_035_32"


def serve_child(args) -> None:
    """The server process: the deployment, ``args.workers`` Ray actor workers, the HTTP app on 127.0.0.1."""
    import asyncio
    import socket

    import ray
    import uvicorn

    from ws_serve.deploy import build_app, deploy
    from ws_serve.ray_worker import RayWorker

    dep = deploy(None, args.checkpoint, max_batch=args.max_batch, backend="auto", profile_repeats=5)
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    workers = [RayWorker(dep.spec, dep.model, f"ray-{i}", "auto") for i in range(args.workers)]

    async def ready():
        await asyncio.gather(*(w.wait_ready() for w in workers))

    asyncio.run(asyncio.wait_for(ready(), 600))
    app, _ = build_app(dep, workers, "slackfit", max_queue=4096, default_slo_ms=args.slo_ms)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)

    @contextlib.asynccontextmanager
    async def announce():  # entered once the router runs, in the server's event loop
        write_ready_file(args.serve_child, "127.0.0.1", sock.getsockname()[1], None)
        yield

    app.state.services.append(announce)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", ws="none")).run(
        sockets=[sock])
    ray.shutdown()


@contextlib.contextmanager
def server_child_process(args, checkpoint: Path, log: Path, env: dict[str, str], timeout_s: float = 600.0):
    """Start :func:`serve_child` in a child process; yields (base URL, pid) once it is ready; SIGTERM at the end."""
    ready = log.with_suffix(".ready.json")
    cmd = [sys.executable, __file__, "--serve-child", str(ready), "--checkpoint", str(checkpoint), "--workers",
           str(args.workers), "--max-batch", str(args.max_batch), "--slo-ms", str(args.slo_ms)]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout_s
        while (ends := read_ready_file(ready)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; its log ends:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        while httpx.get(f"{ends.http}/v2/health/ready", timeout=10).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server never became ready; see {log}")
            time.sleep(0.2)
        yield ends.http, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def actor_processes(server_pid: int) -> list[int]:
    """Processes below the server whose title names ws-serve's worker actor."""
    out = []
    for pid in descendants(server_pid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::SubNetActActor"):
            out.append(pid)
    return sorted(out)


def server_counters(url: str) -> tuple[Counter, int]:
    """The server's ``ws_serve_requests_total`` by outcome and ``ws_serve_workers_alive``."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    outcomes, alive = Counter(), -1
    for line in text.splitlines():
        if line.startswith("ws_serve_requests_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            outcomes[outcome] = int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("ws_serve_workers_alive "):
            alive = int(float(line.rsplit(" ", 1)[1]))
    return outcomes, alive


def attainment(records, slo_ms: float, lo: float, hi: float) -> tuple[float, int]:
    """SLO attainment (met / sent) of the requests due in ``[lo, hi)`` s, and how many there were."""
    chosen = [r for r in records if lo <= r.at_s < hi]
    return (sum(r.met(slo_ms) for r in chosen) / len(chosen) if chosen else float("nan")), len(chosen)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="Ray actor workers (one is killed)")
    parser.add_argument("--rate", type=float, help="mean q/s of the trace (default: --load × measured capacity)")
    parser.add_argument("--load", type=float, default=0.7, help="trace rate as a fraction of the capacity")
    parser.add_argument("--start-qps", type=float, default=200.0, help="first capacity probe (q/s)")
    parser.add_argument("--probe-s", type=float, default=3.0, help="seconds per capacity probe")
    parser.add_argument("--cv2", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--kill-at", type=float, default=0.5, help="when to kill, as a fraction of the duration")
    parser.add_argument("--slo-ms", type=float, default=250.0)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--subnets", type=int, default=6)
    parser.add_argument("--bin-s", type=float, default=3.0, help="time bin of the attainment timeline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve-child", help=argparse.SUPPRESS)  # ready file: run as the server process
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_child:
        serve_child(args)
        return
    if args.workers < 2 or not 0 < args.kill_at < 1:
        parser.error(f"need --workers >= 2 and 0 < --kill-at < 1, got {args.workers} and {args.kill_at}")

    plain = load_supernet(MODEL)
    shape = tuple(int(v) for v in plain.pretrained_cfg["input_size"])
    served = pareto_served_set(plain, args.subnets, generator=torch.Generator().manual_seed(args.seed))
    ray_tmp = tempfile.mkdtemp(prefix="wsray")  # short: Ray puts unix sockets under it
    try:
        with tempfile.TemporaryDirectory(prefix="ws-kill-") as tmp_name:
            tmp = Path(tmp_name)
            ckpt = save_checkpoint(plain, tmp / "net.safetensors")
            served.save(served_set_path(ckpt))
            env = dict(os.environ, WS_SERVE_CACHE_DIR=str(tmp / "cache"), RAY_TMPDIR=ray_tmp, PYTHONUNBUFFERED="1",
                       RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # Ray on the loopback address only
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            with server_child_process(args, ckpt, tmp / "ws-serve.log", env) as (url, pid):
                actors = actor_processes(pid)
                if len(actors) != args.workers:
                    raise RuntimeError(f"expected {args.workers} worker actor processes below the server, found "
                                       f"{len(actors)}: {actors}")
                replay_sync(url, MODEL, [0.05 * i for i in range(40)], slo_ms=args.slo_ms, sample_shape=shape)
                rate, how = args.rate, "given"
                if rate is None:
                    capacity = measure_capacity(url, MODEL, shape, args.slo_ms, args.start_qps, probe_s=args.probe_s)
                    rate, how = args.load * capacity, f"{args.load:g} × measured capacity {capacity:.1f} q/s"
                    time.sleep(1.0)
                trace = bursty_trace(rate / 4, rate * 3 / 4, args.cv2, args.duration, seed=args.seed)
                kill_s = args.kill_at * args.duration
                print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; {MODEL}, "
                      f"{len(served)} served SubNets, {args.workers} Ray actor workers (processes {actors}); trace: "
                      f"{len(trace)} queries in {trace.duration:.0f} s ({trace.mean_rate:.1f} q/s mean, {how}; CV² "
                      f"{args.cv2:g}), SLO {args.slo_ms:g} ms, max batch {args.max_batch}; kill at {kill_s:.1f} s",
                      flush=True)
                results = {}
                for name in ("control (no kill)", f"kill one worker at {kill_s:.0f} s"):
                    before, _ = server_counters(url)
                    timer = None
                    if name.startswith("kill"):
                        timer = threading.Timer(kill_s, os.kill, (actors[0], signal.SIGKILL))
                        timer.start()
                    report = replay_sync(url, MODEL, trace, slo_ms=args.slo_ms, sample_shape=shape, seed=args.seed)
                    if timer is not None:
                        timer.join()
                    after, alive = server_counters(url)
                    results[name] = (report, after - before, alive)
                    time.sleep(1.0)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    print("\n| run | sent | answered 200 | lost: error statuses | lost: transport errors | SLO attainment | "
          f"before {kill_s:.0f} s | after {kill_s:.0f} s | p50 ms | p99 ms | server outcomes | workers alive after |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for name, (report, outcomes, alive) in results.items():
        d = report.to_dict()
        errors = {k: v for k, v in d["statuses"].items() if k != "200"}
        http = ", ".join(f"{v} × {k}" for k, v in errors.items() if k.isdigit()) or "0"
        transport = sum(v for k, v in errors.items() if not k.isdigit())
        pre, n_pre = attainment(report.records, args.slo_ms, 0.0, kill_s)
        post, n_post = attainment(report.records, args.slo_ms, kill_s, float("inf"))
        server = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()) if v)
        print(f"| {name} | {d['sent']} | {d['ok']} | {http} | {transport} | {d['slo_attainment']:.4f} | "
              f"{pre:.4f} ({n_pre}) | {post:.4f} ({n_post}) | {d['p50_ms']:.0f} | {d['p99_ms']:.0f} | {server} | "
              f"{alive} |")
    timelines = {name: report.timeline(args.bin_s) for name, (report, _, _) in results.items()}
    bins = max(len(t["t_s"]) for t in timelines.values())
    print(f"\nSLO attainment per {args.bin_s:g}-s bin (by when requests were due):\n")
    print("| run | " + " | ".join(f"{i * args.bin_s:g}–{(i + 1) * args.bin_s:g} s" for i in range(bins)) + " |")
    print("|---|" + "---:|" * bins)
    for name, t in timelines.items():
        cells = [f"{v:.2f}" if not np.isnan(v) else "" for v in t["slo_attainment"]]
        print(f"| {name} | " + " | ".join(cells + [""] * (bins - len(cells))) + " |")


if __name__ == "__main__":
    main()

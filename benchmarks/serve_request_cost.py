"""What one request costs on this machine: CPU of the server and of the load generator per request.

For a checkpoint with its served set (e.g. the main job's ``runs/<name>/supernet.safetensors``), each
listed SubNet is served fixed by a real ``ws-serve run`` process (``--backend``, one worker, max batch
8) while the open-loop load generator (:func:`ws_serve.loadgen.replay`) sends a steady ``--rate`` for
``--seconds`` over each transport. Printed per (transport, SubNet): the server process's CPU time per
request (from ``/proc/<pid>/stat``), the load generator's own CPU time per request (``getrusage``),
and the client-measured p50/p99 latency, beside the SubNet's profiled batch-1 forward. When the
request costs several times the forward, the choice of SubNet barely moves a server's capacity.

    python benchmarks/serve_request_cost.py --checkpoint runs/NAME/supernet.safetensors \\
        [--subnets ID,ID] [--rate 300] [--seconds 5] [--transports grpc,http] [--backend auto]

Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
from pathlib import Path

from ws_serve.deploy import deploy
from ws_serve.launch import server_endpoints
from ws_serve.loadgen import TRANSPORTS, replay_sync


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a ws checkpoint with its served set")
    parser.add_argument("--model", default=None, help="the SuperNet's registered name (default: from the checkpoint)")
    parser.add_argument("--subnets", default=None, help="served SubNet ids, comma-separated (default: min and max)")
    parser.add_argument("--rate", type=float, default=300.0, help="steady arrival rate, q/s")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--transports", default="grpc,http")
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    transports = args.transports.split(",")
    if not set(transports) <= set(TRANSPORTS):
        parser.error(f"--transports: allowed {TRANSPORTS}, got {args.transports!r}")

    dep = deploy(args.model, args.checkpoint, max_batch=8, backend=args.backend)
    profile, model, shape = dep.profile, dep.model.name, dep.model.sample_shape
    ids = args.subnets.split(",") if args.subnets else [
        profile.subnet_ids[min(range(profile.num_subnets), key=lambda s: profile.latency(s, 1))],
        profile.subnet_ids[-1]]
    print(f"{platform.machine()}, {os.cpu_count()} CPUs; {args.rate:g} q/s for {args.seconds:g} s; "
          f"backend {args.backend}; model {model}, input {shape}\n")
    print("| transport | SubNet (batch-1 forward) | server CPU / request | client CPU / request | client p50 / p99 |")
    print("|---|---|---:|---:|---:|")
    arrivals = [i / args.rate for i in range(int(args.rate * args.seconds))]
    with tempfile.TemporaryDirectory(prefix="ws-request-cost-") as tmp:
        for transport in transports:
            for sid in ids:
                server_args = ["--checkpoint", str(args.checkpoint), "--policy", f"fixed:{sid}", "--max-batch", "8",
                               "--max-queue", "4096", "--backend", args.backend, "--grpc-port", "0"]
                with server_endpoints(server_args, Path(tmp) / "server.log") as ends:
                    url = ends.grpc if transport == "grpc" else ends.http
                    replay_sync(url, model, [0.002 * i for i in range(100)], slo_ms=1000, sample_shape=shape,
                                transport=transport)  # warm-up
                    server0, client0 = process_cpu_s(ends.pid), own_cpu_s()
                    report = replay_sync(url, model, arrivals, slo_ms=1000, sample_shape=shape, transport=transport)
                    server = (process_cpu_s(ends.pid) - server0) / report.sent * 1e3
                    client = (own_cpu_s() - client0) / report.sent * 1e3
                forward = profile.latency(profile.index(sid), 1)
                print(f"| {transport} | {sid} ({forward:.2f} ms) | {server:.2f} ms | {client:.2f} ms | "
                      f"{report.latency_percentile(50):.2f} / {report.latency_percentile(99):.2f} ms |", flush=True)


if __name__ == "__main__":
    main()

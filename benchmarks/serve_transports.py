"""Data-plane overhead per transport: HTTP JSON, HTTP binary tensor data and gRPC, against a real server.

A perf_analyzer-style breakdown for one 1×3×32×32 FP32 request of the untrained tiny SuperNet
(``ws_ofa_mbv3_035_32``, one pinned SubNet, batch 1, one worker), sent one after another by one client
(``--requests`` per transport after ``--warmup``):

* client p50 / p99 — request sent to response decoded, measured by the client;
* server overhead p50 — what the server reports per request (``overhead_ms``): its receive-to-respond
  time minus queueing and the batch's run on its worker (transport, parsing, scheduling, encoding);
* queue p50 (``queue_ms``: arrival to dispatch, parsing included) and compute p50 (``compute_ms``: the
  run on the worker thread, hand-over to the thread and back included);
* bare forward p50 — the same SubNet's forward in this process (``EagerBackend``), no server.

Then the event loop's lag during long forwards: an in-process Router with a ``LocalWorker`` runs
batches of ``--stall-batch`` while a coroutine asks to wake every millisecond; if the forward blocked
the loop, the largest lag would be the length of a batch.

    python benchmarks/serve_transports.py [--requests 300] [--warmup 30] [--stall-batch 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
import tritonclient.grpc as grpcclient

from ws_serve.backends import EagerBackend
from ws_serve.deploy import deploy
from ws_serve.launch import server_endpoints
from ws_serve.loadgen import encode_infer_request
from ws_serve.policies import FixedSubNet
from ws_serve.runtime import LocalWorker, Router

MODEL = "ws_ofa_mbv3_035_32"


def _p(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _http_json(url, x):
    body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    with httpx.Client(base_url=url, timeout=60) as http:
        def send():
            r = http.post(f"/v2/models/{MODEL}/infer", content=body, headers={"Content-Type": "application/json"})
            out = r.json()
            np.asarray(out["outputs"][0]["data"], dtype=np.float32)
            return out["parameters"]
        yield send


def _http_binary(url, x):
    body, head = encode_infer_request(x)
    with httpx.Client(base_url=url, timeout=60) as http:
        def send():
            r = http.post(f"/v2/models/{MODEL}/infer", content=body,
                          headers={"Inference-Header-Content-Length": str(head)})
            n = int(r.headers["inference-header-content-length"])
            np.frombuffer(r.content[n:], dtype="<f4")
            return json.loads(r.content[:n])["parameters"]
        yield send


def _grpc(address, x):
    client = grpcclient.InferenceServerClient(address)
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    try:
        def send():
            result = client.infer(MODEL, [inp])
            result.as_numpy("logits")
            params = result.get_response().parameters
            return {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in params.items()}
        yield send
    finally:
        client.close()


def _measure(make, where, x, requests, warmup):
    client, server = [], {"overhead_ms": [], "queue_ms": [], "compute_ms": []}
    sid = None
    for send in make(where, x):
        for i in range(warmup + requests):
            t0 = time.perf_counter()
            params = send()
            dt = (time.perf_counter() - t0) * 1e3
            if i >= warmup:
                client.append(dt)
                for key in server:
                    server[key].append(params[key])
            sid = params["subnet_id"]
    return client, server, sid


def _bare(sid, x, n):
    dep = deploy(MODEL, subnets=3, max_batch=1, profile_warmup=0, profile_repeats=1)
    backend = EagerBackend(dep.act)
    t = torch.from_numpy(x)
    times = []
    for i in range(n + 10):
        t0 = time.perf_counter()
        backend(t, sid)
        if i >= 10:
            times.append((time.perf_counter() - t0) * 1e3)
    return times, dep


async def _loop_lag(dep, batch, batches):
    """Largest and p99 lag of a 1-ms sleeper while ``batches`` forwards of ``batch`` run on a LocalWorker."""
    router = Router([LocalWorker(EagerBackend(dep.act), "cpu-0")], FixedSubNet(dep.profile, 0), max_queue=10_000)
    await router.start()
    lags, stop = [], asyncio.Event()

    async def sleeper():
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append((time.perf_counter() - t0) * 1e3 - 1.0)

    probe = asyncio.create_task(sleeper())
    await asyncio.sleep(0.2)
    idle = list(lags)
    lags.clear()
    x = torch.randn(batch, 3, 32, 32)
    forwards = []
    for _ in range(batches):
        result = await router.infer(x, 60_000)
        forwards.append(result.compute_ms)
    stop.set()
    await probe
    await router.stop()
    return idle, lags, forwards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--stall-batch", type=int, default=64)
    parser.add_argument("--stall-batches", type=int, default=10)
    args = parser.parse_args()
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    server_args = ["--model", MODEL, "--subnets", "3", "--max-batch", "1", "--profile-repeats", "2",
                   "--backend", "eager", "--policy", "fixed:0", "--slo-ms", "60000", "--overhead-ms", "0",
                   "--grpc-port", "0"]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp, server_endpoints(server_args, Path(tmp) / "serve.log") as ends:
        for name, make, where in [("HTTP JSON", _http_json, ends.http), ("HTTP binary", _http_binary, ends.http),
                                  ("gRPC (raw contents)", _grpc, ends.grpc)]:
            rows[name] = _measure(make, where, x, args.requests, args.warmup)
    sid = next(iter(rows.values()))[2]
    bare, dep = _bare(sid, x, args.requests)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; SubNet {sid}, batch 1, {args.requests} sequential requests "
          f"per transport after {args.warmup} warm-up\n")
    print("| transport | client p50 ms | client p99 ms | server overhead p50 ms | overhead p90 ms | queue p50 ms "
          "| compute p50 ms | bare forward p50 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (client, server, _) in rows.items():
        print(f"| {name} | {_p(client, 0.5):.2f} | {_p(client, 0.99):.2f} | {_p(server['overhead_ms'], 0.5):.3f} | "
              f"{_p(server['overhead_ms'], 0.9):.3f} | {_p(server['queue_ms'], 0.5):.3f} | "
              f"{_p(server['compute_ms'], 0.5):.2f} | {statistics.median(bare):.2f} |")

    idle, busy, forwards = asyncio.run(_loop_lag(dep, args.stall_batch, args.stall_batches))
    print(f"\n#### Event-loop lag (1-ms sleeper) during {args.stall_batches} forwards of batch {args.stall_batch} "
          f"on a LocalWorker thread\n")
    print("| state | wake-ups | lag p50 ms | lag p99 ms | lag max ms | forward p50 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| idle | {len(idle)} | {_p(idle, 0.5):.2f} | {_p(idle, 0.99):.2f} | {max(idle):.2f} | |")
    print(f"| forwards running | {len(busy)} | {_p(busy, 0.5):.2f} | {_p(busy, 0.99):.2f} | {max(busy):.2f} | "
          f"{statistics.median(forwards):.1f} |")


if __name__ == "__main__":
    main()

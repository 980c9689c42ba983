"""What one request costs on this machine: CPU of the server and of the load generator per request.

For a checkpoint with its served set (e.g. the main job's ``runs/<name>/supernet.safetensors``), each
listed SubNet is served fixed by a real ``ws-serve run`` process (``--backend``, one worker, max batch
8) while the open-loop load generator (:func:`ws_serve.loadgen.replay`) sends a steady ``--rate`` for
``--seconds`` over each transport. Printed per (transport, SubNet): the server process's CPU time per
request (from ``/proc/<pid>/stat``), the load generator's own CPU time per request (``getrusage``),
and the client-measured p50/p99 latency, beside the SubNet's profiled batch-1 forward. When the
request costs several times the forward, the choice of SubNet barely moves a server's capacity.

A ``floor`` row per transport serves the same requests from a do-nothing KServe v2 endpoint on the same
stack as ``ws-serve run`` (FastAPI under uvicorn on uvloop, a ``grpc.aio`` servicer on the same loop),
which answers every request with zeros of the model's output shape: no model, queue, policy or
validation. Its CPU per request is what the transport libraries alone cost on this machine — the part
of a request no scheduling policy and no leaner ws-serve could remove.

    python benchmarks/serve_request_cost.py --checkpoint runs/NAME/supernet.safetensors \\
        [--subnets ID,ID] [--rate 300] [--seconds 5] [--repeats 3] [--transports grpc,http] [--backend auto]

Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import statistics
import tempfile
from pathlib import Path

from ws_serve.backends import server_backend_options
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


def _floor_server(conn, num_classes: int) -> None:
    """A do-nothing KServe v2 server (HTTP binary and gRPC ModelInfer) on free loopback ports; sends
    ``(pid, http_port, grpc_port)`` through ``conn`` once it listens, then serves until terminated."""
    import contextlib
    import json
    import socket

    import grpc
    import uvicorn
    from fastapi import FastAPI, Response
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    logits = bytes(4 * num_classes)
    head = json.dumps({"model_name": "floor", "outputs": [{"name": "output", "datatype": "FP32",
                       "shape": [1, num_classes], "parameters": {"binary_data_size": len(logits)}}],
                       "parameters": {"subnet_id": "floor", "accuracy": 0.0}}).encode()

    class Servicer(pb_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request, context):
            response = pb.ModelInferResponse(model_name=request.model_name, outputs=[
                pb.ModelInferResponse.InferOutputTensor(name="output", datatype="FP32", shape=[1, num_classes])],
                raw_output_contents=[logits])
            response.parameters["subnet_id"].string_param = "floor"
            response.parameters["accuracy"].double_param = 0.0
            return response

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))

    @contextlib.asynccontextmanager
    async def lifespan(app):  # the gRPC server on uvicorn's loop, as ws-serve run starts its own
        grpc_server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), grpc_server)
        grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
        await grpc_server.start()
        conn.send((os.getpid(), sock.getsockname()[1], grpc_port))
        yield
        await grpc_server.stop(None)

    async def infer(request):
        await request.body()
        return Response(head + logits, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(len(head))})

    app = FastAPI(lifespan=lifespan)
    app.add_route("/v2/models/{name}/infer", infer, methods=["POST"])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])


def _median_range(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f} ms"
    return f"{statistics.median(values):.2f} ms ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a ws checkpoint with its served set")
    parser.add_argument("--model", default=None, help="the SuperNet's registered name (default: from the checkpoint)")
    parser.add_argument("--subnets", default=None, help="served SubNet ids, comma-separated (default: min and max)")
    parser.add_argument("--rate", type=float, default=300.0, help="steady arrival rate, q/s")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3, help="streams per row, one server (median and range)")
    parser.add_argument("--transports", default="grpc,http")
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    transports = args.transports.split(",")
    if not set(transports) <= set(TRANSPORTS):
        parser.error(f"--transports: allowed {TRANSPORTS}, got {args.transports!r}")
    if args.repeats < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error(f"need --repeats >= 1, --rate > 0, --seconds > 0; got {args.repeats}, {args.rate}, {args.seconds}")

    # the profile under the options a one-worker server times its SubNets with (the batch-1 column)
    dep = deploy(args.model, args.checkpoint, max_batch=8, backend=args.backend,
                 backend_options=server_backend_options(args.backend, 1))
    profile, model, shape = dep.profile, dep.model.name, dep.model.sample_shape
    ids = args.subnets.split(",") if args.subnets else [
        profile.subnet_ids[min(range(profile.num_subnets), key=lambda s: profile.latency(s, 1))],
        profile.subnet_ids[-1]]
    arrivals = [i / args.rate for i in range(int(args.rate * args.seconds))]

    def row(transport: str, label: str, url: str, pid: int) -> None:
        """``args.repeats`` steady streams against one server; one table row (median and range)."""
        replay_sync(url, model, [0.002 * i for i in range(100)], slo_ms=1000, sample_shape=shape,
                    transport=transport)  # warm-up
        server, client, p50, p99 = [], [], [], []
        for _ in range(args.repeats):
            server0, client0 = process_cpu_s(pid), own_cpu_s()
            report = replay_sync(url, model, arrivals, slo_ms=1000, sample_shape=shape, transport=transport)
            if report.ok < report.sent:
                raise RuntimeError(f"{transport}, {label}: {report.sent - report.ok} of {report.sent} requests "
                                   f"failed ({dict(report.statuses)})")
            server.append((process_cpu_s(pid) - server0) / report.sent * 1e3)
            client.append((own_cpu_s() - client0) / report.sent * 1e3)
            p50.append(report.latency_percentile(50))
            p99.append(report.latency_percentile(99))
        total = [a + b for a, b in zip(server, client)]
        print(f"| {transport} | {label} | {_median_range(server)} | {_median_range(client)} | "
              f"{_median_range(total)} | {statistics.median(p50):.2f} / {statistics.median(p99):.2f} ms |", flush=True)

    print(f"{platform.machine()}, {os.cpu_count()} CPUs; {args.rate:g} q/s for {args.seconds:g} s, "
          f"{args.repeats} stream(s) per row; backend {args.backend}; model {model}, input {shape}\n")
    print("| transport | served by (batch-1 forward) | server CPU / request | client CPU / request | "
          "server + client | client p50 / p99 |")
    print("|---|---|---:|---:|---:|---:|")
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="ws-request-cost-") as tmp:
        for transport in transports:
            here, there = ctx.Pipe()
            floor = ctx.Process(target=_floor_server, args=(there, dep.model.num_classes), daemon=True)
            floor.start()
            try:
                if not here.poll(60):
                    raise RuntimeError("the floor server did not start within 60 s")
                pid, http_port, grpc_port = here.recv()
                row(transport, "floor: do-nothing endpoint, no model",
                    f"127.0.0.1:{grpc_port}" if transport == "grpc" else f"http://127.0.0.1:{http_port}", pid)
            finally:
                floor.terminate()
                floor.join()
            for sid in ids:
                server_args = ["--checkpoint", str(args.checkpoint), "--policy", f"fixed:{sid}", "--max-batch", "8",
                               "--max-queue", "4096", "--backend", args.backend, "--grpc-port", "0"]
                with server_endpoints(server_args, Path(tmp) / "server.log") as ends:
                    row(transport, f"ws-serve, {sid} ({profile.latency(profile.index(sid), 1):.2f} ms)",
                        ends.grpc if transport == "grpc" else ends.http, ends.pid)


if __name__ == "__main__":
    main()

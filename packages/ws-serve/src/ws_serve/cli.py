"""``ws-serve`` command line: ``run``, ``profile``, ``simulate``, ``replay`` and ``trace``.

    ws-serve run --model ws_ofa_mbv3_035_32 --port 8000 --policy slackfit --workers 1
    ws-serve run --checkpoint supernet.safetensors --host 0.0.0.0 --port 8000 --name classifier
    ws-serve profile --checkpoint supernet.safetensors --max-batch 16 --out profile.json
    ws-serve simulate --paper-profile --trace bursty --cv2 8 --workers 8 --slo-ms 36
    ws-serve trace bursty --cv2 4 --duration 60 --out bursty.csv
    ws-serve replay --url http://127.0.0.1:8000 --model ws_ofa_mbv3_035_32 --trace bursty.csv --slo-ms 100

``python -m ws_serve ...`` is the same command. Optional dependencies (``--ray``, ``--grpc-port``, the
``--backend`` runtimes) and the ``--device`` are checked before anything is loaded or profiled: a missing
one ends the command at once with one line saying what is needed (and how to install it), exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import signal
import socket
import sys
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main", "serving_banner"]


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="a registered SuperNet (timm.list_models('ws_*')); default: the checkpoint's")
    p.add_argument("--checkpoint", help="a ws-core checkpoint (.safetensors)")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default: the checkpoint's or the model's)")
    p.add_argument("--served", help="served set JSON (default: <checkpoint>.served.json, else a Pareto set)")
    p.add_argument("--subnets", type=_positive(int), default=6, help="size of the default Pareto served set")
    p.add_argument("--max-batch", type=_positive(int), default=16, help="largest batch (profile covers 1..B)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--profile-repeats", type=_positive(int), default=10, help="timed forwards per latency entry")
    p.add_argument("--profile-rounds", type=_positive(int), default=3,
                   help="profiling rounds; each latency is the lowest per-round median")
    p.add_argument("--latency", choices=("measured", "predicted"), default="measured",
                   help="the profile: every served SubNet measured at every batch size, or predicted from "
                        "per-block latencies and --latency-anchors SubNets measured whole (large served sets)")
    p.add_argument("--latency-anchors", type=_non_negative_int, default=3,
                   help="with --latency predicted: SubNets measured whole to scale the block sums")
    p.add_argument("--seed", type=int, default=0, help="seed for the default served set and an uncheckpointed model")


def _model_name(text: str) -> str:
    from .server import check_model_name

    try:
        return check_model_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _say(line: str) -> None:
    print(f"ws-serve: {line}", flush=True)


def _deploy(args: argparse.Namespace, profile: str | None = None, backend_options: dict | None = None):
    from .deploy import deploy

    if args.model is None and args.checkpoint is None:
        raise SystemExit("ws-serve: give --model or --checkpoint")
    backend = getattr(args, "backend", None)
    return deploy(args.model, args.checkpoint, num_classes=args.num_classes, served=args.served,
                  subnets=args.subnets, max_batch=args.max_batch, device=args.device, profile=profile,
                  profile_repeats=args.profile_repeats, profile_rounds=args.profile_rounds, seed=args.seed,
                  backend=None if backend == "eager" else backend, progress=_say, name=getattr(args, "name", None),
                  latency=args.latency, latency_anchors=args.latency_anchors, backend_options=backend_options)


# checks before any work -----------------------------------------------------------------------------
_EXTRAS = {  # option -> (modules it imports, what it needs, pip install argument)
    "--ray": (("ray",), "Ray", "'ws-serve[ray]'"),
    "--grpc-port": (("grpc", "google.protobuf", "tritonclient.grpc"), "grpcio and tritonclient[grpc]",
                    "'ws-serve[grpc]'"),
    "--backend tensorrt": (("torch_tensorrt",), "Torch-TensorRT", "'ws-serve[tensorrt]'"),
    "--backend onnxruntime": (("onnxruntime", "onnx"), "onnxruntime and onnx", "onnxruntime 'onnx<1.23'"),
}
_CUDA_BACKENDS = ("cudagraphs", "tensorrt")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing or broken
        return False


def _missing_dependency(option: str) -> str | None:
    modules, what, install = _EXTRAS[option]
    if all(_installed(m) for m in modules):
        return None
    return f"{option} needs {what}: pip install {install}"


def _available_devices() -> list[str]:
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def _device_problem(device: str, gpus: int = 1) -> str | None:
    """Why ``--device`` cannot be used here (on CUDA: with ``gpus`` GPUs, one per worker), or ``None``."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device must be cpu, cuda, cuda:<index> or mps, got {device!r}"
    available = _available_devices()
    if dev.type == "cpu":
        return None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = (f"this torch ({torch.__version__}) is built without CUDA" if torch.version.cuda is None
                   else "no NVIDIA GPU or driver is visible")
            return f"--device {device}: no usable CUDA GPU ({why}); available: {', '.join(available)}"
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            return f"--device {device}: there is no such GPU; available: {', '.join(available)}"
        if gpus > count:
            return (f"--device {device} --workers {gpus} needs {gpus} GPUs (one per worker, cuda:0..), "
                    f"{count} available: {', '.join(available)}")
        return None
    if device in available:
        return None
    return f"--device {device} is not available here; available: {', '.join(available)}"


def _preflight(args: argparse.Namespace) -> str | None:
    """The first reason ``run`` / ``profile`` cannot start on this machine, or ``None``: checked before
    loading, profiling or binding anything, so a missing dependency costs no waiting."""
    if getattr(args, "ray", False) and (problem := _missing_dependency("--ray")):
        return problem
    if getattr(args, "grpc_port", None) is not None and (problem := _missing_dependency("--grpc-port")):
        return problem
    backend = getattr(args, "backend", None)
    if f"--backend {backend}" in _EXTRAS and (problem := _missing_dependency(f"--backend {backend}")):
        return problem
    # local workers take one GPU each (cuda:0..N-1); Ray places its actors on the cluster's GPUs itself
    problem = _device_problem(args.device, 1 if getattr(args, "ray", False) else getattr(args, "workers", 1))
    if problem:
        return problem
    on_cuda = args.device.startswith("cuda")
    if backend in _CUDA_BACKENDS and not on_cuda:
        return f"--backend {backend} runs on CUDA GPUs; --device is {args.device} (use --device cuda)"
    if backend == "onnxruntime" and args.device != "cpu":
        return f"--backend onnxruntime runs on the CPU; --device is {args.device} (use --backend auto or eager there)"
    ray = getattr(args, "ray", False)
    for flag, what in (("intra_op_threads", "how many threads ONNX Runtime runs"),
                       ("intra_op_spinning", "how ONNX Runtime's threads wait")):
        if getattr(args, flag, None) is not None and (backend not in ("auto", "onnxruntime")
                                                      or args.device != "cpu" or ray):
            return (f"--{flag.replace('_', '-')} sets {what} on the CPU (--backend auto or "
                    f"onnxruntime, local workers); got --backend {backend}, --device {args.device}"
                    f"{', --ray' if ray else ''}")
    return None


# run ------------------------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    # SIGTERM ends the server like Ctrl-C: uvicorn shuts down gracefully (every accepted request is
    # answered), then re-raises the signal, which lands here as KeyboardInterrupt -> exit status 0
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        _serve(args)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("ws-serve: stopped", flush=True)
    return 0


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from .deploy import build_app, make_local_workers

    options = _backend_options(args)
    dep = _deploy(args, args.profile, options)  # the profile times the sessions the workers will run
    if args.ray:
        import ray

        from .ray_worker import RayWorker

        ray.init(num_cpus=max(args.workers, 1), include_dashboard=False, ignore_reinit_error=True)
        gpus = 1.0 if args.device.startswith("cuda") else 0.0
        workers = [RayWorker(dep.spec, dep.model, f"ray-{i}", args.backend, num_gpus=gpus)
                   for i in range(args.workers)]

        async def ready() -> None:  # gather inside the loop asyncio.run starts (its futures belong to it)
            await asyncio.wait_for(asyncio.gather(*(w.wait_ready() for w in workers)), 600)

        asyncio.run(ready())
    else:
        devices = [f"cuda:{i}" for i in range(args.workers)] if args.device.startswith("cuda") else None
        workers = make_local_workers(dep, args.workers, args.backend, devices, options)
        backend = getattr(workers[0], "backend", None)
        if hasattr(backend, "threads_by_subnet"):
            threads = ", ".join(f"{sid}: {n}" for sid, n in backend.threads_by_subnet().items())
            _say(f"ONNX Runtime intra-op threads per SubNet ({threads}); idle threads spin: {backend.spinning}")
    app, router = build_app(dep, workers, args.policy, max_queue=args.max_queue, late=args.late,
                            overhead_ms=args.overhead_ms, query_cost_ms=args.query_cost_ms,
                            default_slo_ms=args.slo_ms,
                            max_body_bytes=int(args.max_body_mb * 1024 * 1024))
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)  # connections wait in the backlog until the server accepts them
    host, port = sock.getsockname()[:2]

    grpc_endpoint = None
    if args.grpc_port is not None:
        from .grpc_server import add_grpc_endpoint

        grpc_endpoint = add_grpc_endpoint(app, args.host, args.grpc_port, grace_s=args.graceful_timeout)

    @contextlib.asynccontextmanager
    async def endpoints():  # entered in the server's event loop once the router (and gRPC) run
        async with contextlib.AsyncExitStack() as stack:
            grpc_port = None if grpc_endpoint is None else grpc_endpoint.port
            _say(serving_banner(dep, f"http://{host}:{port}", None if grpc_port is None else f"{host}:{grpc_port}",
                                len(workers), router.policy.describe(), args.slo_ms))
            if args.ready_file:
                from .launch import write_ready_file

                write_ready_file(args.ready_file, host, port, grpc_port)
                stack.callback(Path(args.ready_file).unlink, missing_ok=True)
            yield

    app.state.services.append(endpoints)
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, access_log=False, lifespan="on",
                                           ws="none", timeout_graceful_shutdown=args.graceful_timeout))
    server.run(sockets=[sock])


def _backend_options(args: argparse.Namespace) -> dict:
    """ONNX Runtime's options for a server's local CPU workers
    (:func:`~ws_serve.backends.server_backend_options`; Ray actors build their own backends)."""
    from .backends import server_backend_options

    if args.ray:
        return {}
    return server_backend_options(args.backend, args.workers, device=args.device, threads=args.intra_op_threads,
                                  spinning=args.intra_op_spinning)


def serving_banner(dep: Any, http: str, grpc: str | None, workers: int, policy: str, slo_ms: float) -> str:
    """The start-up line: where the model is served, how, and its SubNets with their accuracies, each
    labelled with where it comes from (``MACs proxy, not measured`` for an untrained SuperNet's)."""
    from .server import accuracy_label

    label = accuracy_label(dep.served.accuracy_source)
    served = ", ".join(f"{s.id}: acc {s.accuracy:.3g} ({label})" for s in dep.served)
    where = http if grpc is None else f"{http} and gRPC {grpc}"
    return (f"serving {dep.model.name} at {where} with {workers} worker(s), policy {policy}, default SLO "
            f"{slo_ms:g} ms; SubNets: {served}")


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


# profile --------------------------------------------------------------------------------------------
def _profile(args: argparse.Namespace) -> int:
    if args.calibrate:
        import torch

        from .deploy import calibrate_subnet_norm, load_supernet, read_images, served_set_path
        from .profile import ServedSet, pareto_served_set

        if args.checkpoint is None:
            raise SystemExit("ws-serve profile: --calibrate stores statistics next to --checkpoint; give one")
        net = load_supernet(args.model, args.checkpoint, args.num_classes, args.seed)
        sidecar = served_set_path(args.checkpoint)
        if args.served:
            served = ServedSet.load(args.served)
        elif sidecar.is_file():
            served = ServedSet.load(sidecar)
        else:
            served = pareto_served_set(net, args.subnets, generator=torch.Generator().manual_seed(args.seed))
        served.save(sidecar)
        calibrate_subnet_norm(net, served, read_images(args.calibrate), checkpoint=args.checkpoint)
        print(f"ws-serve: SubnetNorm statistics of {len(served)} SubNets recalibrated on {args.calibrate}")
    dep = _deploy(args)
    p = dep.profile
    print(f"profile on {p.device} ({p.note})")
    shown = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= p.max_batch]
    print(f"{'subnet':<14}{'accuracy':>10}{'MMACs':>9}" + "".join(f"{'b=' + str(b):>10}" for b in shown))
    macs = {s.id: s.macs for s in dep.served}
    for i, sid in enumerate(p.subnet_ids):
        print(f"{sid:<14}{p.accuracies[i]:>10.4g}{macs.get(sid, 0) / 1e6:>9.1f}"
              + "".join(f"{p.latency(i, b):>9.2f}ms" for b in shown))
    if args.out:
        p.save(args.out)
        print(f"wrote {args.out}")
    return 0


# simulate -------------------------------------------------------------------------------------------
def _load_trace(args: argparse.Namespace):
    from .traces import (
        Trace,
        bursty_trace,
        maf_trace,
        read_maf_invocations,
        synthetic_maf_invocations,
        time_varying_trace,
    )

    kind = args.trace
    if kind == "bursty":
        return bursty_trace(args.base_rate, args.variant_rate, args.cv2, args.duration, args.seed)
    if kind == "time-varying":
        return time_varying_trace(args.base_rate, args.rate_end, args.acceleration, args.duration, args.cv2,
                                  seed=args.seed)
    if kind == "maf-synthetic":
        counts = synthetic_maf_invocations(seed=args.seed).sum(axis=0)
        return maf_trace(counts, args.duration, args.mean_rate, seed=args.seed, name="maf-synthetic")
    if kind == "maf":
        if not args.invocations:
            raise SystemExit("ws-serve: --trace maf needs --invocations FILE [FILE ...]")
        return maf_trace(read_maf_invocations(args.invocations), args.duration, args.mean_rate, seed=args.seed)
    if not Path(kind).is_file():
        raise SystemExit(f"ws-serve: --trace must be bursty, time-varying, maf, maf-synthetic or a trace file; "
                         f"{kind!r} is none of these")
    return Trace.load(kind)


def _add_trace_args(p: argparse.ArgumentParser, default: str | None = "bursty", source: bool = True) -> None:
    if source:
        p.add_argument("--trace", default=default,
                       help="a trace file (.csv/.json) or a generator: bursty, time-varying, maf, maf-synthetic")
    p.add_argument("--duration", type=_positive(float), default=60.0, help="seconds (generated traces)")
    p.add_argument("--cv2", type=float, default=8.0, help="squared coefficient of variation of Gamma arrivals")
    p.add_argument("--base-rate", type=float, default=1500.0, help="bursty: base rate; time-varying: start rate")
    p.add_argument("--variant-rate", type=float, default=5550.0, help="bursty: Gamma stream rate")
    p.add_argument("--rate-end", type=float, default=6800.0, help="time-varying: final rate")
    p.add_argument("--acceleration", type=float, default=500.0, help="time-varying: q/s^2")
    p.add_argument("--mean-rate", type=float, default=6400.0, help="maf: mean rate after compression")
    p.add_argument("--invocations", nargs="*", help="maf: invocations_per_function_md.anon.dNN.csv files")


def _simulate(args: argparse.Namespace) -> int:
    from .policies import POLICIES, make_policy
    from .profile import Profile, superserve_paper_profile
    from .simulator import simulate

    if args.profile:
        profile = Profile.load(args.profile)
    else:
        profile = superserve_paper_profile()
        print("profile: synthetic, modelled on the SuperServe paper's numbers (superserve_paper_profile)")
    trace = _load_trace(args)
    names = args.policy or ["slackfit", "slackfit-paper", "maxbatch", "maxacc", "mincost"] + [
        f"fixed:{round(k * (profile.num_subnets - 1) / 5)}" for k in range(6)]
    unknown = [n for n in names if n.partition(":")[0] not in POLICIES]
    if unknown:
        raise SystemExit(f"ws-serve: unknown policies {unknown}; allowed {sorted(POLICIES)} (fixed:<index>)")
    print(f"trace {trace.name}: {len(trace)} queries over {trace.duration:.1f} s ({trace.mean_rate:.0f} q/s); "
          f"{args.workers} workers, SLO {args.slo_ms:g} ms")
    print(f"{'policy':<34}{'attainment':>12}{'accuracy':>10}{'mean batch':>12}{'dropped':>9}{'late':>7}")
    results = []
    for name in names:
        r = simulate(trace, make_policy(name, profile), args.workers, args.slo_ms, late=args.late,
                     max_queue=args.max_queue, query_cost_ms=args.query_cost_ms)
        results.append(r.to_dict())
        print(f"{r.policy:<34}{r.slo_attainment:>12.5f}{r.mean_accuracy:>10.3f}{r.mean_batch:>12.1f}"
              f"{r.dropped:>9}{r.served_late:>7}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


# replay ---------------------------------------------------------------------------------------------
def _replay(args: argparse.Namespace) -> int:
    from .loadgen import replay_sync

    trace = _load_trace(args)
    if args.grpc is not None:  # the Open Inference Protocol over gRPC: the model's input shape from ModelMetadata
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        try:
            meta = grpcclient.InferenceServerClient(args.grpc).get_model_metadata(args.model)
        except InferenceServerException as e:
            raise SystemExit(f"ws-serve: {args.grpc} does not serve model {args.model!r}: {e.message()}") from None
        shape, target, transport = [int(d) for d in meta.inputs[0].shape[1:]], args.grpc, "grpc"
    else:
        import httpx

        meta = httpx.get(f"{args.url.rstrip('/')}/v2/models/{args.model}", timeout=10).json()
        if "inputs" not in meta:
            raise SystemExit(f"ws-serve: {args.url} does not serve model {args.model!r}: {meta}")
        shape, target, transport = meta["inputs"][0]["shape"][1:], args.url.rstrip("/"), "http"
    report = replay_sync(target, args.model, trace, slo_ms=args.slo_ms, sample_shape=shape, seed=args.seed,
                         transport=transport)
    out: dict[str, Any] = report.to_dict()
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


# trace ----------------------------------------------------------------------------------------------
def _trace(args: argparse.Namespace) -> int:
    args.trace = args.kind
    trace = _load_trace(args)
    trace.save(args.out)
    print(f"wrote {args.out}: {len(trace)} queries over {trace.duration:.1f} s ({trace.mean_rate:.0f} q/s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``ws-serve`` argument parser (``run``, ``profile``, ``simulate``, ``replay``, ``trace``)."""
    parser = argparse.ArgumentParser(prog="ws-serve", description="SuperServe for weight-shared SuperNets")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve a SuperNet over HTTP (KServe v2 / Open Inference Protocol)")
    _add_model_args(run)
    run.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    run.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed at start)")
    run.add_argument("--grpc-port", type=int, help="also serve the protocol over gRPC on this port of --host "
                     "(0: any free port; default: HTTP only; ws-serve[grpc])")
    run.add_argument("--name", type=_model_name, help="the name clients use for the model (A-Z a-z 0-9 _ . -; "
                     "default: the SuperNet's architecture, e.g. ws_ofa_mbv3_035_32)")
    run.add_argument("--ready-file", help="once listening, write JSON {http, grpc, pid} here (atomically)")
    run.add_argument("--policy", default="slackfit",
                     help="slackfit (queue-aware), slackfit-paper, maxbatch, maxacc, mincost or fixed:<subnet>")
    run.add_argument("--workers", type=_positive(int), default=1, help="workers (CPU threads, GPUs or Ray actors)")
    run.add_argument("--backend", default="auto",
                     choices=["auto", "eager", "onnxruntime", "compile", "cudagraphs", "tensorrt"],
                     help="auto: onnxruntime on CPU (eager for SubNets whose export fails), eager on GPU")
    run.add_argument("--ray", action="store_true", help="run workers as Ray actors (ws-serve[ray])")
    run.add_argument("--intra-op-threads", type=_positive(int), default=None,
                     help="ONNX Runtime intra-op threads per SubNet session (default: one, or torch's threads "
                          "less one core kept for request handling, split over --workers, whichever runs the "
                          "SubNet faster, measured at start-up; on 2 cores: one)")
    run.add_argument("--intra-op-spinning", choices=["off", "run", "on"], default=None,
                     help="how ONNX Runtime's idle intra-op threads wait: off (block), run (spin during a "
                          "forward only), on (spin between forwards too); default: run under "
                          "OMP_WAIT_POLICY=PASSIVE (as ws_serve.launch starts servers), else on")
    run.add_argument("--profile", help="a profile JSON to use instead of measuring")
    run.add_argument("--slo-ms", type=_positive(float), default=100.0, help="default latency SLO of a request")
    run.add_argument("--max-queue", type=_positive(int), default=1024, help="queued queries before 503")
    run.add_argument("--late", choices=["drop", "serve"], default="drop")
    run.add_argument("--overhead-ms", type=_non_negative, default=1.0, help="dispatch overhead the policy reserves")
    run.add_argument("--query-cost-ms", type=_non_negative, default=0.0,
                     help="server time per queued query outside the forward pass; SlackFit charges it to "
                          "draining the backlog (ws_serve.calibration.estimate_query_cost measures it)")
    run.add_argument("--max-body-mb", type=_positive(float), default=16.0)
    run.add_argument("--graceful-timeout", type=_positive(float), default=30.0,
                     help="seconds to finish open requests on shutdown")
    run.add_argument("--log-level", default="warning")

    prof = sub.add_parser("profile", help="measure (or reuse) the latency profile of the served set")
    _add_model_args(prof)
    prof.add_argument("--calibrate", help="safetensors file with an 'images' tensor: recalibrate SubnetNorm")
    prof.add_argument("--out", help="write the profile JSON here (for simulate / run --profile)")

    sim = sub.add_parser("simulate", help="discrete-event simulation of policies on a trace")
    sim.add_argument("--profile", help="profile JSON (default: the synthetic SuperServe-paper profile)")
    _add_trace_args(sim)
    sim.add_argument("--policy", action="append", help="policy to simulate (repeatable; default: all)")
    sim.add_argument("--workers", type=_positive(int), default=8)
    sim.add_argument("--slo-ms", type=_positive(float), default=36.0)
    sim.add_argument("--late", choices=["drop", "serve"], default="drop")
    sim.add_argument("--max-queue", type=_positive(int))
    sim.add_argument("--query-cost-ms", type=_non_negative, default=0.0,
                     help="handling time per query outside the forward pass, spent by its worker")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--json", help="write the results here")

    rep = sub.add_parser("replay", help="open-loop replay of a trace against a live server")
    rep.add_argument("--url", default="http://127.0.0.1:8000", help="the server's HTTP base URL")
    rep.add_argument("--grpc", default=None, metavar="HOST:PORT",
                     help="replay over gRPC to this address instead of HTTP (ws-serve run --grpc-port)")
    rep.add_argument("--model", required=True)
    _add_trace_args(rep, default=None)
    rep.add_argument("--slo-ms", type=_positive(float), default=100.0)
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--json", help="write the report here")

    tr = sub.add_parser("trace", help="write a trace file")
    tr.add_argument("kind", choices=["bursty", "time-varying", "maf", "maf-synthetic"])
    tr.add_argument("--out", required=True, help="output .csv or .json")
    _add_trace_args(tr, source=False)
    tr.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``ws-serve`` with ``argv`` (default: the process's arguments); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "replay" and args.trace is None:
        parser.error("replay: --trace is required")
    if args.command == "run":
        from .policies import POLICIES

        if args.policy.partition(":")[0] not in POLICIES:
            parser.error(f"run: --policy must be one of {sorted(POLICIES)} (or fixed:<subnet>), got {args.policy!r}")
        if args.grpc_port is not None and not 0 <= args.grpc_port <= 65535:
            parser.error(f"run: --grpc-port must be in [0, 65535] (0: any free port), got {args.grpc_port}")
    if args.command in ("run", "profile"):
        problem = _preflight(args)
        if problem is not None:
            print(f"ws-serve: {problem}", file=sys.stderr, flush=True)
            return 2
    handler = {"run": _run, "profile": _profile, "simulate": _simulate, "replay": _replay, "trace": _trace}
    return handler[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

"""ws-serve vs Ray Serve, the peer a user would pick instead: same machine, same open-loop trace, same client.

Every system is driven by the same client (KServe v2 requests with binary tensor data, latency
measured at the client) with the same SLO. Ray Serve's replicas parse the same v2 request
(``ws_serve.server.parse_infer_request``) and answer in the same format, so only the serving system
differs. The Ray Serve models are the served SubNets extracted from the SuperNet
(``net.extract(cfg).eval()``), stored once as files and loaded by the replica, run either by PyTorch
(``torch.save`` / ``torch.load``) or by ONNX Runtime with default session options (``--peer-runtimes``).
ws-serve serves one SuperNet with SubNetAct through its default backend (``auto``: ONNX Runtime on CPU)
and profiles the served set with that backend at start.

Sections (one per run, ``--section``):

* ``batch`` — SlackFit over a 6-SubNet Pareto served set vs one Ray Serve replica holding one fixed
  SubNet with dynamic batching (``@serve.batch(max_batch_size, batch_wait_timeout_s)``; the Clipper+-style
  single-model baseline), once with the most accurate and once with the median SubNet, at ``--rate``.
* ``saturation`` — the same comparison at the load where ws-serve saturates: the highest steady rate
  the ws-serve process sustains with 95 % SLO attainment (``ws_serve.calibration.measure_capacity``),
  times ``--load``, as the mean rate of the bursty trace.
* ``multiplex`` — every request names one of 20 served SubNets, drawn uniformly. ws-serve gets the
  request parameter ``subnet_id``; Ray Serve gets the same body and the ``serve_multiplexed_model_id``
  header, served by one replica with ``@serve.multiplexed`` (``max_num_models_per_replica`` at its
  default, 3: a replica keeps the 3 most recently used SubNets and loads the others from their files on
  demand) and ``@serve.batch`` (which batches per model id). Also reported: resident memory of the
  server process(es) (from /proc: peak RSS of the serving process during the trace, and the PSS summed
  over every process of the server after it) and how often the replica loaded a model.

Accuracy is the served set's accuracy: the relative-MACs proxy of the untrained SuperNet unless a served
set with measured accuracies is given via ``--served``. Untrained weights change neither latency nor memory.

    python benchmarks/serve_rayserve.py [--section batch|saturation|multiplex] [--rate 20] [--cv2 4]
        [--duration 20] [--slo-ms 250] [--peer-runtimes torch,onnxruntime] [--timeout-s 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on the loopback address only

import httpx
import numpy as np
import torch

from ws_core.checkpoint import save_checkpoint
from ws_serve.calibration import measure_capacity
from ws_serve.deploy import load_supernet, served_set_path
from ws_serve.launch import server_endpoints
from ws_serve.loadgen import ReplayReport, RequestRecord, encode_infer_request, replay_sync
from ws_serve.profile import ServedSet, pareto_served_set
from ws_serve.traces import Trace, bursty_trace

DEFAULT_MODEL = {"batch": "ws_ofa_mbv3_035_32", "saturation": "ws_ofa_mbv3_035_32", "multiplex": "ws_ofa_mbv3_035_28"}
RUNTIMES = ("torch", "onnxruntime")


# Memory (Linux /proc) ------------------------------------------------------------------------------
def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (0 if it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size of ``pid`` (``smaps_rollup``): its private pages plus its share of shared ones,
    so that the PSS of a group of processes adds up to the memory the group uses."""
    with contextlib.suppress(OSError):
        return sum(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                   if line.startswith("Pss:"))
    return 0


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` in the process tree."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


class PeakRss:
    """Samples the RSS of ``pid`` every ``every_s`` seconds in a thread until the block ends; ``peak`` in bytes."""

    def __init__(self, pid: int, every_s: float = 0.25) -> None:
        self.pid, self.every_s, self.peak = pid, every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def pss_sum(pids: list[int]) -> tuple[int, int]:
    """(PSS summed over ``pids``, how many of them were read)."""
    sizes = [pss_bytes(pid) for pid in pids]
    return sum(sizes), sum(1 for s in sizes if s)


# Requests naming their SubNet ----------------------------------------------------------------------
def named_bodies(x: np.ndarray, slo_ms: float, subnet_ids: list[str]) -> dict[str, tuple[bytes, int]]:
    """Per SubNet id: the v2 body (binary tensor data) with ``parameters.subnet_id`` and its JSON header length."""
    body, n = encode_infer_request(x, slo_ms)
    head, tensor = json.loads(body[:n]), body[n:]
    out = {}
    for sid in subnet_ids:
        head["parameters"]["subnet_id"] = sid
        encoded = json.dumps(head).encode()
        out[sid] = (encoded + tensor, len(encoded))
    return out


def report_of(records: list[RequestRecord], duration_s: float, slo_ms: float) -> ReplayReport:
    """A :class:`ReplayReport` built from per-request records."""
    report = ReplayReport(len(records), 0, 0, 0.0, duration_s, slo_ms=slo_ms, records=records)
    for r in records:
        report.statuses[r.status] += 1
        if r.status != 200:
            continue
        report.ok += 1
        report.latencies_ms.append(r.latency_ms)
        report.subnets[r.subnet_id] += 1
        if r.met(slo_ms):
            report.met_slo += 1
            report.accuracy_sum += r.accuracy
    return report


async def replay_named(url: str, model: str, arrivals: np.ndarray, names: list[str], slo_ms: float,
                       sample_shape: tuple[int, ...], seed: int = 0, timeout_s: float = 30.0) -> ReplayReport:
    """Open-loop replay where request ``i`` names SubNet ``names[i]`` (body parameter ``subnet_id`` and
    Ray Serve's ``serve_multiplexed_model_id`` header). A 200 served by another SubNet counts as the
    status ``"wrong SubNet"``."""
    x = np.random.default_rng(seed).standard_normal((1, *sample_shape)).astype(np.float32)
    bodies = named_bodies(x, slo_ms, sorted(set(names)))
    records: list[RequestRecord] = []
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout_s) as client:
        async def send(at: float, sid: str) -> None:
            body, n = bodies[sid]
            headers = {"Inference-Header-Content-Length": str(n), "Content-Type": "application/octet-stream",
                       "serve_multiplexed_model_id": sid}
            t0 = time.perf_counter()
            try:
                r = await client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
            except httpx.HTTPError as e:
                records.append(RequestRecord(at, type(e).__name__))
                return
            ms = (time.perf_counter() - t0) * 1e3
            if r.status_code != 200:
                records.append(RequestRecord(at, r.status_code, ms))
                return
            params = json.loads(r.content[:int(r.headers["inference-header-content-length"])])["parameters"]
            status = 200 if params["subnet_id"] == sid else "wrong SubNet"
            records.append(RequestRecord(at, status, ms, float(params["accuracy"]), params["subnet_id"]))

        start = time.perf_counter()
        tasks = []
        for at, sid in zip(arrivals.tolist(), names):
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
            tasks.append(asyncio.create_task(send(at, sid)))
        await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
    return report_of(sorted(records, key=lambda r: r.at_s), duration, slo_ms)


def replay_any(url, model, trace, names, args, shape) -> ReplayReport:
    """:func:`replay_named` when requests name SubNets (``names``), else ``ws_serve.loadgen.replay``."""
    if names is None:
        return replay_sync(url, model, trace, slo_ms=args.slo_ms, sample_shape=shape, seed=args.seed,
                           timeout_s=args.timeout_s)
    return asyncio.run(replay_named(url, model, trace.arrivals, names, args.slo_ms, shape, args.seed, args.timeout_s))


# ws-serve ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def ws_serve_server(args, tmp: Path, plain, served: ServedSet, policy: str = "slackfit"):
    """A ``ws-serve run`` process (default backend) for the served set; yields its ServerEndpoints."""
    ckpt = save_checkpoint(plain, tmp / "net.safetensors")
    served.save(served_set_path(ckpt))
    run = ["--checkpoint", str(ckpt), "--max-batch", str(args.max_batch), "--policy", policy, "--slo-ms",
           str(args.slo_ms), "--max-queue", "4096", "--profile-repeats", "5"]
    env = dict(os.environ, WS_SERVE_CACHE_DIR=str(tmp / "cache"))
    with server_endpoints(run, tmp / "ws-serve.log", env=env) as ends:
        yield ends


def measure_ws_serve(ends, args, model, shape, trace: Trace, names) -> dict:
    warm = list(names[: len(set(names)) * 2]) if names is not None else None
    replay_any(ends.http, model, trace.head(2.0) if warm is None else Trace(np.arange(len(warm)) * 0.05),
               warm, args, shape)
    with PeakRss(ends.pid) as rss:
        report = replay_any(ends.http, model, trace, names, args, shape)
    pss, _ = pss_sum([ends.pid])
    return {"report": report, "rss": rss.peak, "pss": pss, "processes": 1, "loads": None}


# Ray Serve -----------------------------------------------------------------------------------------
def export_models(plain, served: ServedSet, runtime: str, folder: Path, shape: tuple[int, ...]) -> None:
    """Each served SubNet extracted (eval mode) and stored as ``<id>.pt`` (torch) or ``<id>.onnx``."""
    folder.mkdir(parents=True, exist_ok=True)
    for entry in served:
        sub = plain.extract(entry.config).eval()
        if runtime == "torch":
            torch.save(sub, folder / f"{entry.id}.pt")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(sub, (torch.zeros(1, *shape),), str(folder / f"{entry.id}.onnx"), dynamo=False,
                              input_names=["x"], dynamic_axes={"x": {0: "batch"}})


def load_model(folder: str, subnet_id: str, runtime: str):
    """A stored SubNet as a callable ``Tensor -> Tensor`` (runs in the Ray replica)."""
    if runtime == "torch":
        sub = torch.load(Path(folder) / f"{subnet_id}.pt", weights_only=False).eval()

        def run(x):
            with torch.inference_mode():
                return sub(x)
        return run
    import onnxruntime as ort

    session = ort.InferenceSession(str(Path(folder) / f"{subnet_id}.onnx"), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


async def v2_answer(request, info, infer, subnet_id: str, accuracy: float):
    """Parse a v2 request with ws-serve's parser, run ``await infer(inputs)``, answer in ws-serve's format."""
    from starlette.responses import JSONResponse, Response

    from ws_serve.server import BadRequest, parse_infer_request

    header = request.headers.get("inference-header-content-length")
    try:
        parsed = parse_infer_request(await request.body(), None if header is None else int(header), info)
    except BadRequest as e:
        return JSONResponse({"error": str(e)}, status_code=e.status)
    logits = (await infer(parsed.inputs)).numpy().astype("<f4")
    raw = logits.tobytes()
    head = json.dumps({"model_name": info.name, "parameters": {"subnet_id": subnet_id, "accuracy": accuracy},
                       "outputs": [{"name": "logits", "datatype": "FP32", "shape": list(logits.shape),
                                    "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return Response(head + raw, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head))})


def ray_deployment(args, multiplexed: bool):
    """The Ray Serve deployment class: one fixed SubNet, or every served SubNet through ``@serve.multiplexed``."""
    from ray import serve

    options = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 1}, "max_ongoing_requests": 1024}
    batch = serve.batch(max_batch_size=args.max_batch, batch_wait_timeout_s=args.batch_wait_s)

    class Replica:
        def __init__(self, folder: str, runtime: str, served: dict, model: str, shape: list[int], fixed: str | None):
            from ws_serve.profile import ServedSet as Served
            from ws_serve.server import ModelInfo

            self.served = Served.from_dict(served)
            self.accuracy = {s.id: s.accuracy for s in self.served}
            self.info = ModelInfo(model, tuple(shape), 10, args.max_batch, self.served)
            self.folder, self.runtime, self.fixed, self.loads = folder, runtime, fixed, 0
            self.model = None if fixed is None else load_model(folder, fixed, runtime)

        def stats(self) -> dict:
            return {"pid": os.getpid(), "loads": self.loads}

    if not multiplexed:
        @serve.deployment(**options)
        class FixedSubNetServer(Replica):
            @batch
            async def infer(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
                return list(self.model(torch.cat(inputs)).split([x.shape[0] for x in inputs]))

            async def __call__(self, request):
                return await v2_answer(request, self.info, self.infer, self.fixed, self.accuracy[self.fixed])

        return FixedSubNetServer

    @serve.deployment(**options)
    class MultiplexedSubNets(Replica):
        @serve.multiplexed()  # max_num_models_per_replica: the default (3)
        async def get_model(self, subnet_id: str):
            self.loads += 1
            return load_model(self.folder, subnet_id, self.runtime)

        @batch  # Ray Serve splits each batch by multiplexed model id
        async def infer(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
            model = await self.get_model(serve.get_multiplexed_model_id())
            return list(model(torch.cat(inputs)).split([x.shape[0] for x in inputs]))

        async def __call__(self, request):
            sid = serve.get_multiplexed_model_id()
            if sid not in self.accuracy:
                from starlette.responses import JSONResponse

                return JSONResponse({"error": f"serve_multiplexed_model_id must be one of the served SubNets "
                                              f"{self.served.ids}, got {sid!r}"}, status_code=400)
            return await v2_answer(request, self.info, self.infer, sid, self.accuracy[sid])

    return MultiplexedSubNets


def run_ray_serve(args, tmp: Path, plain, served: ServedSet, runtime: str, fixed: str | None, model: str,
                  shape: tuple[int, ...], trace: Trace, names) -> dict:
    import ray
    from ray import serve

    folder = tmp / f"models-{runtime}"
    if not folder.exists():
        export_models(plain, served, runtime, folder, shape)
    temp = tempfile.mkdtemp(prefix="wsray")  # short: Ray puts unix sockets under it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, _temp_dir=temp,
             _node_ip_address="127.0.0.1")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.ray_port})
        app = ray_deployment(args, fixed is None).bind(str(folder), runtime, served.to_dict(), model, list(shape),
                                                       fixed)
        handle = serve.run(app, route_prefix=f"/v2/models/{model}/infer", blocking=False)
        url = f"http://127.0.0.1:{args.ray_port}"
        pid = handle.stats.remote().result()["pid"]
        warm = list(names[: len(set(names)) * 2]) if names is not None else None
        replay_any(url, model, trace.head(2.0) if warm is None else Trace(np.arange(len(warm)) * 0.05), warm,
                   args, shape)
        loads = handle.stats.remote().result()["loads"]
        with PeakRss(pid) as rss:
            report = replay_any(url, model, trace, names, args, shape)
        pss, n = pss_sum(descendants(os.getpid()))  # all that ray.init started
        loads = handle.stats.remote().result()["loads"] - loads
        return {"report": report, "rss": rss.peak, "pss": pss, "processes": n, "loads": loads}
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


# Tables --------------------------------------------------------------------------------------------
def add_row(rows: list[tuple[str, dict]], name: str, measured: dict) -> None:
    """Keep a row and say so at once (a partial run still shows what it measured)."""
    rows.append((name, measured))
    d = measured["report"].to_dict()
    print(f"measured {name}: SLO attainment {d['slo_attainment']:.4f}, p50 {d['p50_ms']:.0f} ms, p99 "
          f"{d['p99_ms']:.0f} ms, statuses {d['statuses']}", flush=True)


def print_table(rows: list[tuple[str, dict]], memory: bool) -> None:
    mem = " peak RSS, serving process (MiB) | PSS, all server processes (MiB) | model loads |" if memory else ""
    print(f"\n| system | SLO attainment | mean served accuracy | throughput (q/s) | p50 ms | p99 ms | statuses |{mem}")
    print("|---|---:|---:|---:|---:|---:|---|" + ("---:|---:|---:|" if memory else ""))
    for name, m in rows:
        d = m["report"].to_dict()
        statuses = ", ".join(f"{v} × {k}" for k, v in sorted(d["statuses"].items(), key=lambda kv: -kv[1]))
        line = (f"| {name} | {d['slo_attainment']:.4f} | {d['mean_accuracy']:.4f} | {d['throughput']:.1f} | "
                f"{d['p50_ms']:.0f} | {d['p99_ms']:.0f} | {statuses} |")
        if memory:
            loads = "— (all resident)" if m["loads"] is None else str(m["loads"])
            line += f" {m['rss'] / 2**20:.0f} | {m['pss'] / 2**20:.0f} ({m['processes']} processes) | {loads} |"
        print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=["batch", "saturation", "multiplex"], default="batch")
    parser.add_argument("--model", help=f"the SuperNet (default per section: {DEFAULT_MODEL})")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="mean queries/s of the trace (steady 1/4 + Gamma 3/4); saturation: measured instead")
    parser.add_argument("--cv2", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--slo-ms", type=float, default=250.0)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--batch-wait-s", type=float, default=0.005, help="Ray Serve batch_wait_timeout_s")
    parser.add_argument("--subnets", type=int, help="served SubNets (default: 6; multiplex: 20)")
    parser.add_argument("--served", help="served set JSON (default: a Pareto set, MACs proxy accuracy)")
    parser.add_argument("--peer-runtimes", default="torch,onnxruntime",
                        help=f"how the Ray Serve replica runs its extracted SubNets: a subset of {RUNTIMES}")
    parser.add_argument("--load", type=float, default=1.0, help="saturation: trace rate as a fraction of capacity")
    parser.add_argument("--start-qps", type=float, default=300.0, help="saturation: first capacity probe")
    parser.add_argument("--probe-s", type=float, default=3.0, help="saturation: seconds per capacity probe")
    parser.add_argument("--timeout-s", type=float, default=30.0,
                        help="client timeout per request (an unanswered request counts as ReadTimeout)")
    parser.add_argument("--ray-port", type=int, default=8471)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runtimes = [r for r in args.peer_runtimes.split(",") if r]
    if not runtimes or any(r not in RUNTIMES for r in runtimes):
        parser.error(f"--peer-runtimes must be a comma-separated subset of {list(RUNTIMES)}, "
                     f"got {args.peer_runtimes!r}")

    model = args.model or DEFAULT_MODEL[args.section]
    plain = load_supernet(model)
    shape = tuple(int(v) for v in plain.pretrained_cfg["input_size"])
    n = args.subnets or (20 if args.section == "multiplex" else 6)
    served = ServedSet.load(args.served) if args.served else pareto_served_set(
        plain, n, generator=torch.Generator().manual_seed(args.seed))
    rows: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="ws-rayserve-") as tmp_name:
        tmp = Path(tmp_name)
        with ws_serve_server(args, tmp, plain, served) as ends:
            rate, note = args.rate, ""
            if args.section == "saturation":
                replay_sync(ends.http, model, [0.05 * i for i in range(40)], slo_ms=args.slo_ms, sample_shape=shape)
                capacity = measure_capacity(ends.http, model, shape, args.slo_ms, args.start_qps,
                                            probe_s=args.probe_s)
                rate, note = args.load * capacity, (f"; ws-serve capacity (steady rate with >= 95 % SLO attainment, "
                                                    f"{args.probe_s:g}-s probes from {args.start_qps:g} q/s × 0.8): "
                                                    f"{capacity:.1f} q/s, trace at {args.load:g} × capacity")
            trace = bursty_trace(rate / 4, rate * 3 / 4, args.cv2, args.duration, seed=args.seed)
            names = None
            if args.section == "multiplex":
                pick = np.random.default_rng(args.seed).integers(0, len(served), len(trace))
                names = [served.ids[i] for i in pick]
            print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                  f"{torch.get_num_threads()} threads; model {model} {list(shape)}; {len(served)} served SubNets; "
                  f"trace: {len(trace)} queries in {trace.duration:.0f} s ({trace.mean_rate:.1f} q/s, CV² "
                  f"{args.cv2:g}), SLO {args.slo_ms:g} ms, max batch {args.max_batch}; accuracy: "
                  f"{served.accuracy_source}{note}", flush=True)
            label = (f"ws-serve, requests name their SubNet ({len(served)} SubNets, SubNetAct)" if names is not None
                     else f"ws-serve SlackFit ({len(served)} SubNets, SubNetAct)")
            add_row(rows, label, measure_ws_serve(ends, args, model, shape, trace, names))
        for runtime in runtimes:
            if names is not None:
                add_row(rows, f"Ray Serve @serve.multiplexed + @serve.batch, {runtime}",
                        run_ray_serve(args, tmp, plain, served, runtime, None, model, shape, trace, names))
                continue
            for index, which in ((len(served) - 1, "most accurate"), (len(served) // 2, "median")):
                add_row(rows, f"Ray Serve @serve.batch, fixed {which} SubNet, {runtime}",
                        run_ray_serve(args, tmp, plain, served, runtime, served.ids[index], model, shape, trace,
                                      None))
    print_table(rows, memory=names is not None)


if __name__ == "__main__":
    main()

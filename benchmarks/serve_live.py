"""Live ws-serve on CPU with the tiny SuperNet: actuation time, router + HTTP overhead, memory.

Measured in one run:

1. **Actuation** — ``SubNetAct.actuate(subnet_id)`` (a table lookup) vs ws-core's in-place
   ``activate`` (seen-before configs) vs ``extract`` (a standalone copy: what deploying each SubNet
   as its own model costs per switch). Goal from the issue: < 0.1 ms.
2. **Overhead** over a bare forward (batch 1, one pinned SubNet): the same forward through the router
   in-process (EDF queue + policy + worker thread), and end to end over HTTP against a real
   ``ws-serve run`` process (KServe v2 request with binary tensor data, one client, sequential).
3. **Memory** — one SuperNet with SubNetAct serving N SubNets (weights + SubnetNorm tables) vs N
   extracted SubNets, for N = 6 (a Pareto set spanning the cost range) and N = 500 (random SubNets).
4. **Execution backends** — batch-1 and batch-16 latency of the cheapest and the most expensive
   served SubNet through each backend (eager, ``onnxruntime``, ``compile`` with ``--with-compile``)
   and through ONNX Runtime on the plainly extracted SubNets with default session options (the peer
   a user would pick), their weight memory and prepare time; medians and ranges over ``--repeats``
   repeats (blocks of back-to-back calls per backend, in an order rotating over the repeats), and the
   ratio of the default backend to that peer.

    python benchmarks/serve_live.py [--model ws_ofa_mbv3_035_32] [--requests 200] [--memory-n 500]
        [--sections actuation,overhead,memory,backends] [--repeats 5] [--with-compile]
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
import warnings
from pathlib import Path

import httpx
import torch

from _timing import times_us
from ws_core.checkpoint import save_checkpoint
from ws_serve import backends as ws_backends
from ws_serve.backends import DEFAULT_BACKEND, CompileBackend, EagerBackend, make_backend
from ws_serve.deploy import load_supernet, served_set_path
from ws_serve.launch import server_process
from ws_serve.loadgen import encode_infer_request
from ws_serve.policies import FixedSubNet
from ws_serve.profile import pareto_served_set, profile_served
from ws_serve.runtime import LocalWorker, Router
from ws_serve.subnetact import SubNetAct


def _p(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _bytes(module):
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def _row(name, values, unit="µs", base=None):
    med = statistics.median(values)
    ratio = f"{base / med:,.0f}×" if base else ""
    print(f"| {name} | {len(values)} | {med:,.2f} | {_p(values, 0.9):,.2f} | {ratio} |")
    return med


def actuation(args):
    print("\n### Actuation (CPU)\n")
    print(f"| operation | n | median {'µs'} | p90 µs | faster than extract |")
    print("|---|---:|---:|---:|---:|")
    plain = load_supernet(args.model)
    served = pareto_served_set(plain, 6, generator=torch.Generator().manual_seed(args.seed))
    net = load_supernet(args.model)
    act = SubNetAct(net, served.configs)
    ids = [served.ids[i % len(served)] for i in range(args.actuations)]
    for cfg in served.configs:  # warm ws-core's plans and validation cache
        plain.activate(cfg)
    configs = [served.configs[i % len(served)] for i in range(args.actuations)]
    extract = times_us(plain.extract, served.configs * 2)
    base = statistics.median(extract)
    _row("`SubNetAct.actuate(subnet_id)` (table lookup)", times_us(act.actuate, ids), base=base)
    _row("ws-core `activate(SubNetConfig)`, seen before", times_us(plain.activate, configs), base=base)
    _row("ws-core `extract(SubNetConfig)` — baseline", extract, base=base)
    return plain, net, act, served


def overhead(args, plain, act, served):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(args.seed))
    row = len(served) // 2
    sid = served.ids[row]
    backend = EagerBackend(act)
    for _ in range(10):
        backend(x, sid)
    bare = times_us(lambda _: backend(x, sid), range(args.requests))

    profile = profile_served(act.net, served, max_batch=4, warmup=2, repeats=5)

    async def routed():
        router = Router([LocalWorker(EagerBackend(act.replica()), "cpu-0")], FixedSubNet(profile, sid))
        await router.start()
        out = []
        for _ in range(10):
            await router.infer(x, 60_000)
        for _ in range(args.requests):
            t0 = time.perf_counter()
            await router.infer(x, 60_000)
            out.append((time.perf_counter() - t0) * 1e6)
        await router.stop()
        return out

    router_us = asyncio.run(routed())

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(plain, Path(tmp) / "net.safetensors")
        served.save(served_set_path(ckpt))
        profile.save(Path(tmp) / "profile.json")
        args_run = ["--checkpoint", str(ckpt), "--profile", str(Path(tmp) / "profile.json"), "--max-batch", "4",
                    "--policy", f"fixed:{sid}", "--slo-ms", "60000"]
        body, header = encode_infer_request(x.numpy(), 60_000)
        headers = {"Inference-Header-Content-Length": str(header)}
        http_us = []
        with server_process(args_run, Path(tmp) / "server.log") as url, \
                httpx.Client(base_url=url, timeout=60) as client:
            for i in range(args.requests + 10):
                t0 = time.perf_counter()
                r = client.post(f"/v2/models/{args.model}/infer", content=body, headers=headers)
                if i >= 10:
                    http_us.append((time.perf_counter() - t0) * 1e6)
                assert r.status_code == 200, r.text
                hl = int(r.headers["inference-header-content-length"])
                assert json.loads(r.content[:hl])["parameters"]["subnet_id"] == sid

    print(f"\n### Router + HTTP overhead over a bare forward (batch 1, SubNet {sid})\n")
    print("| path | n | median µs | p90 µs | overhead over bare (median) |")
    print("|---|---:|---:|---:|---:|")
    b = statistics.median(bare)
    for name, values in [("bare forward (`EagerBackend`, in-process)", bare),
                         ("router in-process (EDF queue + policy + worker thread)", router_us),
                         ("HTTP end to end (`ws-serve run` process, KServe v2 binary)", http_us)]:
        med = statistics.median(values)
        extra = "" if values is bare else f"+{(med - b) / 1e3:.2f} ms"
        print(f"| {name} | {len(values)} | {med:,.0f} | {_p(values, 0.9):,.0f} | {extra} |")


def _rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def memory(args, served6):
    print("\n### Memory: one SuperNet with SubNetAct vs extracted SubNets (tensor bytes)\n")
    print("| served SubNets | SubNetAct: weights + SubnetNorm (MiB) | extracted SubNets (MiB) | "
          "SubNetAct uses | process RSS growth while extracting (MiB) |")
    print("|---:|---:|---:|---:|---:|")
    g = torch.Generator().manual_seed(args.seed + 1)
    for n in (6, args.memory_n):
        plain = load_supernet(args.model)
        if n == 6:
            configs = served6.configs
        else:
            pool = {plain.space.min(), plain.space.max()}
            while len(pool) < n:
                pool.add(plain.space.sample(g))
            configs = list(pool)
        net = load_supernet(args.model)
        act = SubNetAct(net, configs)
        mine = act.nbytes()
        rss0 = _rss_mib()
        subnets = [plain.extract(c) for c in configs]
        rss1 = _rss_mib()
        extracted = sum(_bytes(s) for s in subnets)
        print(f"| {n} | {mine['total'] / 2**20:.2f} ({mine['supernet'] / 2**20:.2f} + "
              f"{mine['subnet_norm'] / 2**20:.2f}) | {extracted / 2**20:.2f} | "
              f"{extracted / mine['total']:.1f}× less | {rss1 - rss0:.0f} |")
        del subnets, act, net, plain


class _OrtPeer:
    """ONNX Runtime on the plainly extracted SubNets: what a user would deploy (default session options,
    or ``open_session(model_bytes, subnet_id)``)."""

    def __init__(self, plain, served, tmp, name, open_session=None):
        import onnxruntime as ort

        self.name = name

        t0 = time.perf_counter()
        self.sessions, self.nbytes = {}, 0
        for cfg in served.configs:
            path = Path(tmp) / f"peer-{len(name)}-{cfg.id}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(plain.extract(cfg).eval(), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False,
                                  input_names=["x"], dynamic_axes={"x": {0: "batch"}})
            self.nbytes += ws_backends._initializer_bytes(path.read_bytes())
            self.sessions[cfg.id] = (ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                                     if open_session is None else open_session(path.read_bytes(), cfg.id))
        self.prepare_seconds = time.perf_counter() - t0

    def weight_bytes(self):
        return self.nbytes

    def __call__(self, x, sid):
        return torch.from_numpy(self.sessions[sid].run(None, {"x": x.numpy()})[0])


def _cell(values, scale=1.0, fmt="{:.2f}"):
    values = [v * scale for v in values]
    med = statistics.median(values)
    if len(values) == 1 or max(values) == min(values):
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def backend_table(args):
    plain = load_supernet(args.model)
    served = pareto_served_set(plain, 6, generator=torch.Generator().manual_seed(args.seed))
    by_macs = sorted(served, key=lambda s: s.macs)
    points = [(by_macs[0].id, 1), (by_macs[-1].id, 1), (by_macs[0].id, 16), (by_macs[-1].id, 16)]
    labels = [f"{'min' if sid == by_macs[0].id else 'max'} b{b}" for sid, b in points]
    act = SubNetAct(load_supernet(args.model), served.configs)
    shape = tuple(plain.pretrained_cfg.get("input_size", (3, 32, 32)))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        eager = EagerBackend(act)
        eager.prepare(shape, [1, 16])
        rows["eager"] = eager
        default = make_backend(DEFAULT_BACKEND, act.replica(), cache_dir=Path(tmp) / "cache")
        default.prepare(shape, [1, 16])
        ws_backends._SESSIONS.clear()  # a restart: the sessions come from the files just written
        cached = make_backend(DEFAULT_BACKEND, act.replica(), cache_dir=Path(tmp) / "cache")
        cached.prepare(shape, [1, 16])
        rows[f"{default.name} (default: `{DEFAULT_BACKEND}`)"] = default
        if args.with_compile:
            two = SubNetAct(load_supernet(args.model), [by_macs[0].config, by_macs[-1].config])
            compiled = CompileBackend(two)
            compiled.prepare(shape, [1, 16])
            rows["compile (inductor, dynamic batch; min + max SubNets only)"] = compiled
        peer = "ORT on extracted SubNets, default session options (peer)"
        tuned = "ORT on extracted SubNets, the backend's session options"
        rows[peer] = _OrtPeer(plain, served, tmp, peer)
        threads = default.threads_by_subnet()  # the intra-op threads the backend chose per SubNet
        rows[tuned] = _OrtPeer(plain, served, tmp, tuned,
                               open_session=lambda model, sid: default._open(model, threads[sid]))
        prepare = {name: b.prepare_seconds for name, b in rows.items()}
        prepare_cached = {f"{default.name} (default: `{DEFAULT_BACKEND}`)": cached.prepare_seconds}
        xs = {b: torch.randn(b, *shape, generator=torch.Generator().manual_seed(b)) for b in (1, 16)}
        times = {name: {p: [] for p in points} for name in rows}
        names = list(rows)
        with torch.inference_mode():
            for repeat in range(args.repeats):
                for sid, n in points:
                    x = xs[n]
                    iters = args.iters if n == 1 else max(3, args.iters // 3)
                    # each backend runs a block of calls back to back, as a user's process would (calls
                    # interleaved across backends would let one session's spinning threads slow the next
                    # backend's call); the order of the blocks rotates from repeat to repeat, so that
                    # contention from outside hits every backend alike over the repeats
                    for name in names[repeat % len(names):] + names[:repeat % len(names)]:
                        b = rows[name]
                        for _ in range(3):
                            b(x, sid)
                        t = []
                        for _ in range(iters):
                            t0 = time.perf_counter()
                            b(x, sid)
                            t.append((time.perf_counter() - t0) * 1e3)
                        times[name][(sid, n)].append(statistics.median(t))
    print(f"\n### Execution backends ({len(served)} served SubNets, {torch.get_num_threads()} threads; "
          f"min {by_macs[0].macs / 1e6:.1f} MMACs, max {by_macs[-1].macs / 1e6:.1f} MMACs)\n")
    print("Latency in ms: median of per-repeat medians (range over repeats); each backend runs its calls back to "
          "back, in an order that rotates over the repeats.\n")
    print(f"| backend | {' | '.join(labels)} | weight memory (MiB) | prepare (s) |")
    print(f"|---|{'---:|' * (len(points) + 2)}")
    for name, b in rows.items():
        cells = [_cell(times[name][p]) for p in points]
        prep = f"{prepare[name]:.1f}"
        if name in prepare_cached:
            prep += f" cold, {prepare_cached[name]:.2f} cached"
        print(f"| {name} | {' | '.join(cells)} | {b.weight_bytes() / 2**20:.2f} | {prep} |")
    dname = next(n for n in rows if n.startswith(default.name))

    def ratio(a, b):
        return [[x / y for x, y in zip(times[a][p], times[b][p])] for p in points]

    worst = 0.0
    for label, a, b in [("**default / peer**", dname, peer), ("default / same-options ORT", dname, tuned),
                        ("eager / peer", "eager", peer)]:
        r = ratio(a, b)
        if a == dname:
            worst = max(worst, *(statistics.median(v) for v in r))
        print(f"| ratio {label} | {' | '.join(_cell(v, fmt='{:.2f}×') for v in r)} | | |")
    print(f"\nGoal: default backend within 1.3× of ONNX Runtime on the extracted SubNet at batch 1 and 16: "
          f"{'met' if worst <= 1.3 else 'NOT met'} (worst median ratio {worst:.2f}×).")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ws_ofa_mbv3_035_32")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--actuations", type=int, default=2000)
    parser.add_argument("--memory-n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sections", default="actuation,overhead,memory,backends",
                        help="comma-separated subset of actuation, overhead, memory, backends")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats of the backend table")
    parser.add_argument("--iters", type=int, default=30, help="timed calls per batch-1 cell (a third at batch 16)")
    parser.add_argument("--with-compile", action="store_true",
                        help="add torch.compile (inductor) to the backend table (minutes of compilation)")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    unknown = sections - {"actuation", "overhead", "memory", "backends"}
    if unknown:
        parser.error(f"--sections: allowed actuation, overhead, memory, backends; got {sorted(unknown)}")
    print(f"Machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, Python {platform.python_version()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}")
    if sections & {"actuation", "overhead", "memory"}:
        plain, _, act, served = actuation(args)
        if "overhead" in sections:
            overhead(args, plain, act, served)
        if "memory" in sections:
            memory(args, served)
    if "backends" in sections:
        backend_table(args)


if __name__ == "__main__":
    main()

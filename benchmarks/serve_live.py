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

    python benchmarks/serve_live.py [--model ws_ofa_mbv3_035_32] [--requests 200] [--memory-n 500]
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
import torch

from ws_core.checkpoint import save_checkpoint
from ws_serve.backends import EagerBackend
from ws_serve.deploy import load_supernet, served_set_path
from ws_serve.launch import server_process
from ws_serve.loadgen import encode_infer_request
from ws_serve.policies import FixedSubNet
from ws_serve.profile import pareto_served_set, profile_served
from ws_serve.runtime import LocalWorker, Router
from ws_serve.subnetact import SubNetAct


def _times_us(fn, items):
    out = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


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
    extract = _times_us(plain.extract, served.configs * 2)
    base = statistics.median(extract)
    _row("`SubNetAct.actuate(subnet_id)` (table lookup)", _times_us(act.actuate, ids), base=base)
    _row("ws-core `activate(SubNetConfig)`, seen before", _times_us(plain.activate, configs), base=base)
    _row("ws-core `extract(SubNetConfig)` — baseline", extract, base=base)
    return plain, net, act, served


def overhead(args, plain, act, served):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(args.seed))
    row = len(served) // 2
    sid = served.ids[row]
    backend = EagerBackend(act)
    for _ in range(10):
        backend(x, sid)
    bare = _times_us(lambda _: backend(x, sid), range(args.requests))

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ws_ofa_mbv3_035_32")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--actuations", type=int, default=2000)
    parser.add_argument("--memory-n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"Machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, Python {platform.python_version()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}")
    plain, _, act, served = actuation(args)
    overhead(args, plain, act, served)
    memory(args, served)


if __name__ == "__main__":
    main()

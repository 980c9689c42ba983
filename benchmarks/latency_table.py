"""Per-block latency table vs measured SubNet latency (ws_core.latency, OFA's LatencyTable approach).

For ``--subnets`` random SubNets of ``--model`` (seeded; the min and the max included), the blocks are
timed once each into a :class:`ws_core.latency.BlockLatencyTable` (eager, eval mode, this CPU), every
SubNet's latency is predicted as the sum of its blocks, and each SubNet is also measured whole
(extracted, :func:`ws_core.cost.profile_latency`, minimum over rounds of the median). Printed: the
table's size and build time, then Spearman's rank correlation and the mean relative error between
predicted and measured, raw and after one scale factor fitted on the same SubNets (the blocks' sum
leaves out what lies between blocks).

    python benchmarks/latency_table.py [--model ws_ofa_mbv3_035_28] [--subnets 50] [--batch 1] [--threads N]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import timm
import torch

import ws_core  # noqa: F401  (registers the SuperNets)
from ws_core.cost import CostModel, profile_latency
from ws_core.latency import BlockLatencyTable, device_key


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ws_ofa_mbv3_035_28")
    parser.add_argument("--subnets", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    net = timm.create_model(args.model).eval()
    gen = torch.Generator().manual_seed(args.seed)
    configs = list(dict.fromkeys([net.space.min(), net.space.max()]
                                 + [net.space.sample(gen) for _ in range(args.subnets - 2)]))
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.model}, {len(configs)} SubNets, batch {args.batch}, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '(default)')}\n")

    table = BlockLatencyTable(device_key("cpu"))
    t = time.perf_counter()
    timed = table.measure(net, configs, (args.batch,), warmup=3, repeats=10, rounds=2)
    build_s = time.perf_counter() - t
    predicted = np.array([table.predict(net, c, args.batch) for c in configs])

    t = time.perf_counter()
    measured_table = profile_latency(net, configs, (args.batch,), mode="extract", warmup=3, repeats=10, rounds=2)
    profile_s = time.perf_counter() - t
    measured = np.array([measured_table.latency_ms(c.id, args.batch) for c in configs])
    macs = np.array([CostModel(net).macs(c) for c in configs], dtype=float)

    scale = float(np.median(measured / predicted))
    rel = np.abs(predicted - measured) / measured
    rel_scaled = np.abs(scale * predicted - measured) / measured
    print("| quantity | value |\n|---|---:|")
    print(f"| distinct blocks timed | {len(table)} ({timed} timings) |")
    print(f"| table build time | {build_s:.1f} s |")
    print(f"| whole-SubNet profiling of the same SubNets | {profile_s:.1f} s |")
    print(f"| measured latency, min–max | {measured.min():.2f}–{measured.max():.2f} ms |")
    print(f"| Spearman(predicted, measured) | {spearman(predicted, measured):.3f} |")
    print(f"| Spearman(MACs, measured), for comparison | {spearman(macs, measured):.3f} |")
    print(f"| mean relative error, raw sum of blocks | {100 * rel.mean():.1f} % |")
    print(f"| measured / predicted (median) | {scale:.3f} |")
    print(f"| mean relative error after that one factor | {100 * rel_scaled.mean():.1f} % |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"predicted_ms": predicted.tolist(), "measured_ms": measured.tolist(), "macs": macs.tolist(),
                       "ids": [c.id for c in configs]}, f)


if __name__ == "__main__":
    main()

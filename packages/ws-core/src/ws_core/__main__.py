"""``ws-core`` command line: ``ws-core tour`` (also ``python -m ws_core tour``).

The tour creates a SuperNet from timm's registry, samples SubNets, measures their MACs, parameters
and CPU latency, and prints the table and the Pareto set. An untrained SuperNet has no accuracy yet,
so the tour's Pareto set trades latency (lower is better) against MACs as a capacity proxy (higher
is better); with a trained SuperNet, pass accuracies to :func:`ws_core.search.pareto_front` instead.
"""

from __future__ import annotations

import argparse
import sys
import time

import timm
import torch

from .cost import CostModel, profile_latency
from .search import pareto_front

__all__ = ["main"]


def _tour(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    net = timm.create_model(args.model, num_classes=args.num_classes)
    space = net.space
    print(f"SuperNet {args.model}: {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters, "
          f"{space.size():.3e} SubNets ({time.perf_counter() - t0:.1f} s to build)")
    for d in space.dimensions:
        print(f"  {d.name:<11} per {d.level:<5} choices {list(d.choices)}")

    g = torch.Generator().manual_seed(args.seed)
    configs = [space.min(), space.max()] + [space.sample(g) for _ in range(args.subnets - 2)]
    costs = CostModel(net)
    table = profile_latency(net, configs, batch_sizes=(args.batch_size,), warmup=args.warmup, repeats=args.repeats)
    rows = []
    for cfg, entry in zip(configs, table.entries):
        rows.append((cfg, costs.macs(cfg), costs.params(cfg), entry.median_ms))
    front = set(pareto_front([r[3] for r in rows], [r[1] for r in rows]))

    print(f"\n{len(rows)} SubNets, CPU latency at batch {args.batch_size} "
          f"(median of {args.repeats}, {torch.get_num_threads()} threads, SubNets activated in place):")
    header = f"{'':2}{'subnet':<18}{'depth':<17}{'MMACs':>9}{'params (M)':>12}{'latency (ms)':>14}"
    print(header)
    print("-" * len(header))
    names = {0: "min", 1: "max"}
    for i, (cfg, macs, params, ms) in enumerate(rows):
        mark = "*" if i in front else " "
        label = f"{cfg.id}{' ' + names[i] if i in names else ''}"
        depth = ",".join(str(d) for d in cfg["depth"])
        print(f"{mark:2}{label:<18}{depth:<17}{macs / 1e6:>9.1f}{params / 1e6:>12.3f}{ms:>14.2f}")
    print("\n* Pareto set (latency vs MACs, the capacity proxy of an untrained SuperNet):")
    for i in sorted(front, key=lambda i: rows[i][3]):
        cfg, macs, _, ms = rows[i]
        print(f"  {ms:7.2f} ms  {macs / 1e6:7.1f} MMACs  {cfg.to_json()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ws-core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    tour = sub.add_parser("tour", help="sample SubNets of a registered SuperNet; print costs and the Pareto set")
    tour.add_argument("--model", default="ws_ofa_mbv3_035_32", help="a name from timm.list_models('ws_*')")
    tour.add_argument("--num-classes", type=int, default=10)
    tour.add_argument("--subnets", type=int, default=12, help="SubNets to profile (min and max included)")
    tour.add_argument("--batch-size", type=int, default=1)
    tour.add_argument("--warmup", type=int, default=3)
    tour.add_argument("--repeats", type=int, default=10)
    tour.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["tour", *(argv or [])])
    if args.model not in timm.list_models("ws_*"):
        parser.error(f"--model must be one of {timm.list_models('ws_*')}, got {args.model!r}")
    if args.subnets < 2:
        parser.error(f"--subnets must be >= 2 (min and max are always included), got {args.subnets}")
    return _tour(args)


if __name__ == "__main__":
    sys.exit(main())

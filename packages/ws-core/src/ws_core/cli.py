"""``ws-core`` command line: ``ws-core tour`` (also ``python -m ws_core tour``).

The tour creates a SuperNet from timm's registry, samples SubNets, measures their MACs, parameters
and CPU latency, and prints the table and the Pareto set. An untrained SuperNet has no accuracy yet,
so the tour's Pareto set trades latency (lower is better) against MACs as a capacity proxy (higher
is better); with a trained SuperNet, pass accuracies to :func:`ws_core.search.pareto_front` instead.

Latency is the minimum over ``--rounds`` rounds of the median of ``--repeats`` timed forwards; each
round sweeps every SubNet, so a round disturbed by other load is discarded. When the rounds disagree
by more than 2× or latency is far from monotone in MACs, the tour warns (on stderr) that the latency
column — and the Pareto set picked from it — reflects machine load rather than the SubNets
(:func:`latency_warnings`).

Example::

    OMP_WAIT_POLICY=PASSIVE ws-core tour --model ws_ofa_mbv3_035_32 --subnets 12 --rounds 3
"""

from __future__ import annotations

import os
import sys

# OpenMP threads that spin while they wait take cores a busy machine's other work needs and inflate CPU
# timings (a tour once saw 15 ms become 1,500 ms for similar SubNets); passive waiting avoids it. libgomp reads
# OMP_WAIT_POLICY once, when torch loads, so it takes effect only if set before the first ``import torch``:
# set by the caller (``OMP_WAIT_POLICY=PASSIVE ws-core tour``, as ``make test`` does), or here when this module
# is imported first. Importing the ``ws_core`` package loads torch, so ``python -m ws_core`` and ``ws-core``
# depend on the caller; the tour prints the policy in effect. Child processes inherit the default set here.
_OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY") or (None if "torch" in sys.modules else "PASSIVE")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402

import timm  # noqa: E402
import torch  # noqa: E402

from .config import SubNetConfig  # noqa: E402
from .cost import CostModel, profile_latency  # noqa: E402
from .search import pareto_front  # noqa: E402
from .supernet import SuperNet  # noqa: E402

__all__ = ["build_parser", "latency_warnings", "main"]

PROG = "ws-core"


def latency_warnings(macs: Sequence[float], round_medians: Sequence[Sequence[float]], factor: float = 2.0) -> list[str]:
    """Reasons not to trust a latency column: an empty list when none is found.

    Args:
        macs: MACs of each SubNet.
        round_medians: ``round_medians[r][i]`` is the median latency of SubNet ``i`` in round ``r``.
        factor: tolerance of both checks (> 1).

    Two checks: the rounds disagree (a SubNet's slowest round median exceeds ``factor`` × its fastest), and
    latency is not monotone in MACs (a SubNet with fewer MACs than another takes more than ``factor`` × its
    latency, both as the minimum over rounds). Each adds one line naming the worst case.

    Example::

        >>> latency_warnings([1e6, 2e6], [[1.0, 2.0], [1.1, 2.1]])
        []
        >>> latency_warnings([1e6, 2e6], [[1.0, 2.0], [3.0, 2.1]])[0][:40]
        'rounds disagree by up to 3.0× (SubNet 0,'
    """
    if factor <= 1:
        raise ValueError(f"latency_warnings: factor must be > 1, got {factor}")
    n = len(macs)
    if not round_medians or any(len(r) != n for r in round_medians):
        raise ValueError(f"latency_warnings: need at least one round of {n} medians (one per SubNet), got "
                         f"{[len(r) for r in round_medians]}")
    out = []
    spread = [max(r[i] for r in round_medians) / min(r[i] for r in round_medians) for i in range(n)]
    worst = max(range(n), key=spread.__getitem__)
    if spread[worst] > factor:
        unstable = sum(s > factor for s in spread)
        times = ", ".join(f"{r[worst]:.2f}" for r in round_medians)
        out.append(f"rounds disagree by up to {spread[worst]:.1f}× (SubNet {worst}, {times} ms); "
                   f"{unstable} of {n} SubNets differ by more than {factor:g}× between rounds")
    latency = [min(r[i] for r in round_medians) for i in range(n)]
    inversions = [(latency[i] / latency[j], i, j) for i in range(n) for j in range(n)
                  if macs[i] < macs[j] and latency[i] > factor * latency[j]]
    if inversions:
        _, i, j = max(inversions)
        out.append(f"latency is not monotone in MACs: SubNet {i} ({macs[i] / 1e6:.1f} MMACs) took {latency[i]:.2f} ms, "
                   f"more than {factor:g}× the {latency[j]:.2f} ms of SubNet {j} ({macs[j] / 1e6:.1f} MMACs)")
    return out


def _sample(args: argparse.Namespace) -> tuple[SuperNet, list[SubNetConfig]]:
    """The SuperNet and the SubNets to profile (min, max, then seeded samples)."""
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    net = timm.create_model(args.model, num_classes=args.num_classes)
    space = net.space
    print(f"SuperNet {args.model}: {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters, "
          f"{space.size():.3e} SubNets ({time.perf_counter() - t0:.1f} s to build)")
    for d in space.dimensions:
        print(f"  {d.name:<11} per {d.level:<5} choices {list(d.choices)}")
    g = torch.Generator().manual_seed(args.seed)
    return net, [space.min(), space.max()] + [space.sample(g) for _ in range(args.subnets - 2)]


def _measure(net: SuperNet, configs: list[SubNetConfig], args: argparse.Namespace,
             timer: Callable[[], float]) -> list[list[float]]:
    """``[round][SubNet]`` median latency in ms: one :func:`profile_latency` sweep over every SubNet per round."""
    return [[e.median_ms for e in profile_latency(net, configs, batch_sizes=(args.batch_size,), warmup=args.warmup,
                                                  repeats=args.repeats, timer=timer).entries]
            for _ in range(args.rounds)]


def _report(net: SuperNet, configs: list[SubNetConfig], args: argparse.Namespace,
            timer: Callable[[], float] = time.perf_counter) -> int:
    costs = CostModel(net)
    macs = [costs.macs(cfg) for cfg in configs]
    params = [costs.params(cfg) for cfg in configs]
    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        medians = _measure(net, configs, args, timer)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    latency = [min(r[i] for r in medians) for i in range(len(configs))]
    front = set(pareto_front(latency, macs))

    policy = _OMP_WAIT_POLICY or "libgomp's default (OMP_WAIT_POLICY was unset when torch loaded)"
    print(f"\n{len(configs)} SubNets, CPU latency at batch {args.batch_size}: min over {args.rounds} round(s) of "
          f"the median of {args.repeats}, {used_threads} threads, OpenMP wait policy {policy}, SubNets activated "
          f"in place:")
    header = f"{'':2}{'subnet':<18}{'depth':<17}{'MMACs':>9}{'params (M)':>12}{'latency (ms)':>14}"
    print(header)
    print("-" * len(header))
    names = {0: "min", 1: "max"}
    for i, cfg in enumerate(configs):
        mark = "*" if i in front else " "
        label = f"{cfg.id}{' ' + names[i] if i in names else ''}"
        depth = ",".join(str(d) for d in cfg["depth"] if d is not None)
        print(f"{mark:2}{label:<18}{depth:<17}{macs[i] / 1e6:>9.1f}{params[i] / 1e6:>12.3f}{latency[i]:>14.2f}")
    print("\n* Pareto set (latency vs MACs, the capacity proxy of an untrained SuperNet):")
    for i in sorted(front, key=latency.__getitem__):
        print(f"  {latency[i]:7.2f} ms  {macs[i] / 1e6:7.1f} MMACs  {configs[i].to_json()}")
    problems = latency_warnings(macs, medians)
    if problems:
        hint = "" if _OMP_WAIT_POLICY == "PASSIVE" else "OMP_WAIT_POLICY=PASSIVE set before Python starts, "
        lines = "\n  ".join([*problems, f"Re-run on an idle machine, with {hint}--threads 1 or more --rounds."])
        print("\nwarning: unstable CPU timings, so the latency column and the Pareto set may reflect machine load "
              f"rather than the SubNets:\n  {lines}", file=sys.stderr)
    return 0


def _tour(args: argparse.Namespace, timer: Callable[[], float] = time.perf_counter) -> int:
    net, configs = _sample(args)
    return _report(net, configs, args, timer)


def build_parser() -> argparse.ArgumentParser:
    """The ``ws-core`` argument parser (subcommand ``tour``)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    tour = sub.add_parser("tour", help="sample SubNets of a registered SuperNet; print costs and the Pareto set")
    tour.add_argument("--model", default="ws_ofa_mbv3_035_32", help="a name from timm.list_models('ws_*')")
    tour.add_argument("--num-classes", type=int, default=10)
    tour.add_argument("--subnets", type=int, default=12, help="SubNets to profile (min and max included)")
    tour.add_argument("--batch-size", type=int, default=1)
    tour.add_argument("--warmup", type=int, default=3)
    tour.add_argument("--repeats", type=int, default=10, help="timed forwards per SubNet and round (median)")
    tour.add_argument("--rounds", type=int, default=3, help="sweeps over all SubNets (latency: min of the medians)")
    tour.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    tour.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ws-core`` with ``argv`` (``None``: ``sys.argv[1:]``); no subcommand means ``tour``; returns the exit
    code."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["tour", *argv]  # the default command: ``ws-core --subnets 4`` is ``ws-core tour --subnets 4``
    args = parser.parse_args(argv)
    if args.model not in timm.list_models("ws_*"):
        parser.error(f"--model must be one of {timm.list_models('ws_*')}, got {args.model!r}")
    if args.subnets < 2:
        parser.error(f"--subnets must be >= 2 (min and max are always included), got {args.subnets}")
    if args.rounds < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error(f"need --rounds >= 1, --repeats >= 1 and --warmup >= 0, got {args.rounds}, {args.repeats}, "
                     f"{args.warmup}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return _tour(args)

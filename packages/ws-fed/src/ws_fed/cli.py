"""``ws-fed`` command line (also ``python -m ws_fed``): :func:`build_parser` and :func:`main`.

* ``ws-fed specialise CHECKPOINT --macs 1e6 2e6`` — one-shot specialisation of a SuperNet trained by
  the ServerApp (``output-dir/supernet.safetensors``) to MAC and/or latency budgets: prints the table
  target → SubNet → accuracy (validation accuracy drives the search, test accuracy is reported).
* ``ws-fed partition --num-partitions 10 --alpha 1`` — the label histogram of each client's partition
  of the bundled digits data, to see how skewed a Dirichlet split is.

Federated training itself runs through Flower: ``flwr run packages/ws-fed [superlink]``, stopped with
``flwr stop <run-id> [superlink]`` (see the README).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from .config import FedConfig
from .federated import specialise_targets, write_json
from .partition import dataset_labels, dirichlet_partition, iid_partition, label_histogram
from .specialise import CRITERIA, DeploymentTarget, format_table
from .task import load_digits

__all__ = ["PROG", "build_parser", "main"]

PROG = "ws-fed"


def _specialise(args: argparse.Namespace) -> int:
    from ws_core.checkpoint import create_from_checkpoint, read_checkpoint_metadata

    extra = read_checkpoint_metadata(args.checkpoint)["extra"]
    seed = int(extra.get("seed", 0)) if args.seed is None else args.seed
    cfg = FedConfig(model=extra.get("model", FedConfig.model), image_size=int(extra.get("image_size", 8)),
                    seed=seed, search_population=args.population, search_generations=args.generations,
                    search_criterion=args.criterion, search_share_candidates=not args.independent_searches,
                    bn_batches=args.bn_batches, bn_mode=extra.get("bn_mode", "federated"),
                    # the data set the SuperNet was trained on (checkpoints without it: the digits)
                    dataset=extra.get("dataset", "digits"),
                    data_root=args.data_root or extra.get("data_root", FedConfig.data_root),
                    train_size=int(extra.get("train_size", 0)))
    net = create_from_checkpoint(args.checkpoint, in_chans=1, resolutions=(cfg.image_size,))
    targets = [DeploymentTarget(f"macs<={m / 1e6:g}M", max_macs=m) for m in args.macs or []]
    targets += [DeploymentTarget(f"latency<={ms:g}ms", max_latency_ms=ms) for ms in args.latency_ms or []]
    if not targets:
        print("ws-fed specialise: give at least one --macs or --latency-ms budget", file=sys.stderr)
        return 2
    specs = specialise_targets(net, cfg, targets)
    print(format_table(specs))
    if args.json:
        write_json(args.json, [s.to_dict() for s in specs])
    return 0


def _partition(args: argparse.Namespace) -> int:
    train = load_digits(seed=args.seed).train
    labels = dataset_labels(train)
    if args.iid:
        parts = iid_partition(len(labels), args.num_partitions, args.seed)
    else:
        parts = dirichlet_partition(labels, args.num_partitions, args.alpha, args.seed,
                                    min_partition_size=min(10, len(labels) // args.num_partitions))
    hist = label_histogram(labels, parts, num_classes=10)
    kind = "IID" if args.iid else f"Dirichlet alpha={args.alpha:g}"
    print(f"digits train split ({len(labels)} images) in {args.num_partitions} partitions, {kind}:")
    print("partition  size  " + " ".join(f"{c:>4d}" for c in range(10)))
    for i, row in enumerate(hist):
        print(f"{i:>9d}  {int(row.sum()):>4d}  " + " ".join(f"{int(v):>4d}" for v in row))
    share = hist.max(1) / np.maximum(hist.sum(1), 1)
    print(f"mean share of each partition's most frequent class: {share.mean():.2f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``ws-fed`` argument parser: one sub-command per tool, each with its handler as ``func``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="ws-fed tools: specialise a federated SuperNet to deployment targets, inspect data splits. "
                    "Federated training runs with `flwr run packages/ws-fed` and a run stops with `flwr stop <run-id>` "
                    "(see packages/ws-fed/README.md).")
    sub = parser.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("specialise", help="search one SubNet per deployment target in a trained SuperNet")
    sp.add_argument("checkpoint", help="supernet.safetensors written by the ServerApp (output-dir)")
    sp.add_argument("--macs", type=float, nargs="*", help="MAC budgets per sample")
    sp.add_argument("--latency-ms", type=float, nargs="*", help="latency budgets (ms, batch 1, this CPU)")
    sp.add_argument("--population", type=int, default=16)
    sp.add_argument("--generations", type=int, default=4)
    sp.add_argument("--criterion", choices=CRITERIA, default="accuracy",
                    help="how the search ranks SubNets on the validation split (loss: when accuracy saturates)")
    sp.add_argument("--independent-searches", action="store_true",
                    help="each target keeps its own search's winner (default: every SubNet scored for one "
                         "target competes for every target it fits)")
    sp.add_argument("--data-root", default=None,
                    help="folder of the data set the SuperNet was trained on (default: the one in the checkpoint)")
    sp.add_argument("--bn-batches", type=int, default=4,
                    help="BN recalibration batches (none for a SuperNet trained with bn-mode \"frozen\")")
    sp.add_argument("--seed", type=int, default=None,
                    help="the run's seed, which fixes the validation/test split (default: the checkpoint's)")
    sp.add_argument("--json", help="also write the results here")
    sp.set_defaults(func=_specialise)

    pp = sub.add_parser("partition", help="label histogram of a federated split of the bundled digits")
    pp.add_argument("--num-partitions", type=int, default=10)
    pp.add_argument("--alpha", type=float, default=1.0)
    pp.add_argument("--iid", action="store_true")
    pp.add_argument("--seed", type=int, default=0)
    pp.set_defaults(func=_partition)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ws-fed`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    ``--help`` and invalid arguments exit through :class:`SystemExit` (argparse's 0 and 2).
    """
    args = build_parser().parse_args(argv)
    return int(args.func(args))

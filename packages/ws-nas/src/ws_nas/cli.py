"""``ws-nas search`` and ``ws-nas train`` (LightningCLI).

``ws-nas search`` fits a :class:`~ws_nas.module.SearchModule` with the
:class:`~ws_nas.callback.NablaQDARTS` callback (``--nas.*``) on
:class:`~ws_nas.data.ImageClassificationData` (``--data.*``, held-out split on by default) and
prints the genotype JSON (also written to ``--nas.genotype_path``).

``ws-nas train`` retrains a genotype (``--model.genotype path.json``) as a
:class:`~ws_nas.module.RetrainModule`, tests it and prints a JSON report — test accuracy, BitOps,
cell BitOps, MACs and model size in bits — optionally written to ``--report_path``; with
``--weights_path`` the trained weights are saved as safetensors (genotype in the metadata), with
``--qonnx_path`` the network is exported to QONNX through ws-sushi.

Every LightningCLI option works (``--config``, ``--print_config``, ``--trainer.*``,
``--seed_everything``). Model shape arguments ``num_classes``, ``in_chans`` and ``input_size`` follow
the data.

Example::

    ws-nas search --data.image_size 8 --model.C 8 --model.layers 3 --trainer.max_epochs 20 \\
        --nas.warmup_epochs 5 --nas.complexity_weight 1e-3 --nas.genotype_path genotype.json
    ws-nas train --model.genotype genotype.json --model.C 8 --model.layers 3 --trainer.max_epochs 30
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from lightning.pytorch.cli import LightningCLI

from .callback import NablaQDARTS
from .data import ImageClassificationData
from .module import RetrainModule, SearchModule

__all__ = ["main"]

USAGE = """usage: ws-nas {search,train} [options]

  search   ∇QDARTS / DARTS search: SearchModule + NablaQDARTS on train / held-out splits
  train    retrain a genotype (--model.genotype path.json) and report accuracy, BitOps, model size

Run 'ws-nas search --help' or 'ws-nas train --help' for the options."""


def _link_data(parser) -> None:
    for name in ("num_classes", "in_chans", "input_size"):
        parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")


class SearchCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(NablaQDARTS, "nas")
        _link_data(parser)
        parser.set_defaults({"data.held_out_fraction": 0.5})


class TrainCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        _link_data(parser)
        parser.add_argument("--report_path", type=str | None, default=None, help="write the JSON report here")
        parser.add_argument("--weights_path", type=str | None, default=None,
                            help="save the trained weights here (safetensors, genotype in the metadata)")
        parser.add_argument("--qonnx_path", type=str | None, default=None,
                            help="export the trained network to QONNX here (needs ws-sushi)")


@contextmanager
def _argv(command: str, args: Sequence[str]):
    """Run LightningCLI on ``args`` as if they were the command line (``prog`` = ``ws-nas <command>``)."""
    saved = sys.argv
    sys.argv = [f"ws-nas {command}", *args]
    try:
        yield
    finally:
        sys.argv = saved


def _search(args: Sequence[str]) -> int:
    with _argv("search", args):
        cli = SearchCLI(SearchModule, ImageClassificationData, run=False, seed_everything_default=0,
                        save_config_kwargs={"overwrite": True})
    cli.trainer.fit(cli.model, cli.datamodule)
    callback = next(c for c in cli.trainer.callbacks if isinstance(c, NablaQDARTS))
    print(callback.genotype.to_json(indent=1))
    return 0


def _train(args: Sequence[str]) -> int:
    with _argv("train", args):
        cli = TrainCLI(RetrainModule, ImageClassificationData, run=False, seed_everything_default=0,
                       save_config_kwargs={"overwrite": True})
    cli.trainer.fit(cli.model, cli.datamodule)
    results = cli.trainer.test(cli.model, cli.datamodule, verbose=False)
    report = {"test_acc": float(results[0]["test_acc"]), **cli.model.cost_report().to_dict(),
              "precision": cli.model.network.precision if isinstance(cli.model.network.precision, str)
              else list(cli.model.network.precision)}
    config = cli.config
    if config.get("weights_path"):
        from ws_core.checkpoint import atomic_save_safetensors

        atomic_save_safetensors(cli.model.network.state_dict(), config["weights_path"],
                                {"genotype": cli.model.network.genotype.to_json(), "report": json.dumps(report)})
    if config.get("qonnx_path"):
        from .export import export_qonnx

        h = cli.model.hparams
        example = torch.zeros(1, h.in_chans, h.input_size, h.input_size)
        export_qonnx(cli.model.network.cpu(), config["qonnx_path"], example)
    text = json.dumps(report, indent=1)
    if config.get("report_path"):
        Path(config["report_path"]).write_text(text)
    print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "search":
        return _search(rest)
    if command == "train":
        return _train(rest)
    print(f"ws-nas: unknown command {command!r}; choose 'search' or 'train'\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

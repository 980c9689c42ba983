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
the data. ``ws-nas`` is an argparse front (:func:`build_parser`) whose subcommands hand their
arguments to their LightningCLI; ``python -m ws_nas`` is the same command.

Example::

    ws-nas search --data.image_size 8 --model.C 8 --model.layers 3 --trainer.max_epochs 20 \\
        --nas.warmup_epochs 5 --nas.complexity_weight 1e-3 --nas.genotype_path genotype.json
    ws-nas train --model.genotype genotype.json --model.C 8 --model.layers 3 --trainer.max_epochs 30
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .callback import NablaQDARTS
from .data import ImageClassificationData
from .module import RetrainModule, SearchModule

__all__ = ["build_parser", "main"]

PROG = "ws-nas"
_DESCRIPTION = ("ws-nas: ∇QDARTS — differentiable search over operations and bit-widths in one weight-shared "
                "DARTS cell SuperNet (plain DARTS as the baseline), then retraining of the searched genotype.")
_SEARCH_HELP = "∇QDARTS / DARTS search: SearchModule + NablaQDARTS on train / held-out splits; prints the genotype"
_TRAIN_HELP = "retrain a genotype (--model.genotype path.json); report accuracy, BitOps, model size"


class _NasCLI(LightningCLI):
    """LightningCLI parsing the ``args`` the front hands over (``None``: ``sys.argv[1:]``) without
    LightningCLI's warning about ``args`` next to a command line."""

    def parse_arguments(self, parser: LightningArgumentParser, args: Sequence[str] | dict | Namespace | None) -> None:
        if isinstance(args, (dict, Namespace)):
            super().parse_arguments(parser, args)
        else:
            self.config = parser.parse_args(None if args is None else list(args))

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # jsonargparse's generic "--model CONFIG  Path to a configuration file", made specific
        parser._option_string_actions["--model"].help = ("a YAML/JSON config of the --model.* arguments below "
                                                         "(ws-nas has no named models)")
        for name in ("num_classes", "in_chans", "input_size"):
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")


class SearchCLI(_NasCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_lightning_class_args(NablaQDARTS, "nas")
        parser.set_defaults({"data.held_out_fraction": 0.5})


class TrainCLI(_NasCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--report_path", type=str | None, default=None, help="write the JSON report here")
        parser.add_argument("--weights_path", type=str | None, default=None,
                            help="save the trained weights here (safetensors, genotype in the metadata)")
        parser.add_argument("--qonnx_path", type=str | None, default=None,
                            help="export the trained network to QONNX here (needs ws-sushi)")


def _cli(cls: type[_NasCLI], model: type, command: str, summary: str, args: Sequence[str]) -> _NasCLI:
    return cls(model, ImageClassificationData, args=list(args), run=False, seed_everything_default=0,
               save_config_kwargs={"overwrite": True},
               parser_kwargs={"prog": f"{PROG} {command}", "description": f"{PROG} {command}: {summary}"})


def _search(args: Sequence[str]) -> int:
    cli = _cli(SearchCLI, SearchModule, "search", _SEARCH_HELP, args)
    cli.trainer.fit(cli.model, cli.datamodule)
    callback = next(c for c in cli.trainer.callbacks if isinstance(c, NablaQDARTS))
    print(callback.genotype.to_json(indent=1))
    return 0


def _train(args: Sequence[str]) -> int:
    cli = _cli(TrainCLI, RetrainModule, "train", _TRAIN_HELP, args)
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


def build_parser() -> argparse.ArgumentParser:
    """The ``ws-nas`` front: ``ws-nas {search,train} [options]``; each subcommand's options are its
    LightningCLI's (``ws-nas search --help``), handed over unparsed."""
    parser = argparse.ArgumentParser(prog=PROG, description=_DESCRIPTION,
                                     epilog=f"Run '{PROG} search --help' or '{PROG} train --help' for the options.")
    sub = parser.add_subparsers(dest="command", metavar="{search,train}", required=True)
    commands: dict[str, tuple[str, Callable[[Sequence[str]], int]]] = {
        "search": (_SEARCH_HELP, _search), "train": (_TRAIN_HELP, _train)}
    for name, (summary, run) in commands.items():
        # add_help=False: "--help" after the subcommand is its LightningCLI's
        sub.add_parser(name, help=summary, add_help=False).set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``ws-nas`` command (also ``python -m ws_nas``) on ``argv`` (``None``: ``sys.argv[1:]``).

    Returns 0 when the subcommand has run; ``--help`` and bad arguments exit through ``SystemExit``
    (0 and 2), as argparse and LightningCLI do.
    """
    args, rest = build_parser().parse_known_args(sys.argv[1:] if argv is None else list(argv))
    return args.run(rest)

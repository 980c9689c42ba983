"""``ws-train``: the LightningCLI of weightshare training.

Example::

    ws-train fit --model ws_ofa_mbv3_035_32 --data digits --trainer.max_epochs 4
    ws-train fit --model ws_ofa_mbv3_100_32 --data cifar10 --shrinking ps --trainer.max_epochs 200
    ws-train fit --config train.yaml                # everything above, as YAML (see --print_config)
    ws-train fit --help

Everything is Lightning's CLI: ``--trainer.*`` are ``Trainer`` arguments (``--trainer.devices 8
--trainer.strategy ddp_find_unused_parameters_true`` for DDP), ``--model.*`` are
:class:`~ws_train.SuperNetModule` arguments, ``--data`` picks a data module
(``digits``, ``cifar10``, ``cifar100``, ``imagefolder`` or a class path) and ``--data.*`` its
arguments, ``--shrinking`` the policy (``des`` — the default —, ``ps``, ``sandwich`` or ``none``)
and ``--shrinking.*`` its arguments, ``--validation.*`` the :class:`~ws_train.SubNetValidation`
callback. Two shorthands are expanded before parsing: ``--model <registered SuperNet name>`` means
``--model.supernet <name>``, and the short data/policy names above map to their classes. After
``fit`` the trained SuperNet is written as a ws-core checkpoint (``--supernet_out``, default
``<log dir>/supernet.safetensors``). ``predict`` returns the logits of the active SubNet
(the max net unless set otherwise) on the data module's held-out split.

``python -m ws_train`` is the same command; :func:`main` returns its exit status.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

import timm
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import ws_core  # noqa: F401  (registers the ws_* SuperNets in timm)

from .data import ClassificationDataModule
from .module import SuperNetModule
from .policies import ShrinkingPolicy
from .validation import SubNetValidation

__all__ = ["DATA_ALIASES", "POLICY_ALIASES", "SuperNetCLI", "main", "normalize_args"]

PROG = "ws-train"

_DESCRIPTION = (
    "ws-train: once-for-all SuperNet training on Lightning — Delayed ε-Shrinking (default), "
    "OFA progressive shrinking, BigNAS sandwich rule."
)
DATA_ALIASES = {
    "digits": "ws_train.DigitsDataModule",
    "fashion_mnist": "ws_train.FashionMNISTDataModule",
    "cifar10": "ws_train.CIFAR10DataModule",
    "cifar100": "ws_train.CIFAR100DataModule",
    "imagefolder": "ws_train.ImageFolderDataModule",
}
POLICY_ALIASES = {
    "des": "ws_train.DelayedEpsilonShrinking",
    "deps": "ws_train.DelayedEpsilonShrinking",
    "ps": "ws_train.ProgressiveShrinking",
    "ofa": "ws_train.ProgressiveShrinking",
    "sandwich": "ws_train.SandwichRule",
    "bignas": "ws_train.SandwichRule",
    "none": "null",
}


def _registered_supernets() -> list[str]:
    return timm.list_models("ws_*")


# a bare name (no dot, slash, brace, colon, space) that is no file: meant as a model name, not as a config
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")


def _model_arg(value: str) -> str:
    """``--model VALUE`` → ``--model.supernet=NAME`` for a registered model, else a config for LightningCLI."""
    if timm.is_model(value):
        return f"--model.supernet={value}"
    if _NAME.fullmatch(value) and not Path(value).exists():
        raise ValueError(f"--model: unknown model {value!r} (registered: {', '.join(_registered_supernets())}); "
                         "--model also takes a YAML/JSON config of the --model.* arguments")
    return f"--model={value}"


def normalize_args(args: Sequence[str]) -> list[str]:
    """Expand the shorthands ``--model <name>``, ``--data <alias>`` and ``--shrinking <alias>``.

    ``--model`` with a bare name (no dot, slash or brace; not a file) must be a registered model
    (``timm.list_models("ws_*")``): an unknown one raises :class:`ValueError` naming the registered
    ones. Any other ``--model`` value (a config file, inline YAML) is left to LightningCLI.

    Example::

        >>> normalize_args(["fit", "--model", "ws_ofa_mbv3_035_32", "--data=digits"])
        ['fit', '--model.supernet=ws_ofa_mbv3_035_32', '--data=ws_train.DigitsDataModule']
    """
    out: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        token = items[i]
        key, eq, value = token.partition("=")
        if key in ("--model", "--data", "--shrinking"):
            if not eq:
                if i + 1 >= len(items):
                    out.append(token)
                    break
                value = items[i + 1]
                i += 1
            if key == "--model":
                out.append(_model_arg(value))
            elif key == "--data" and value.lower() in DATA_ALIASES:
                out.append(f"--data={DATA_ALIASES[value.lower()]}")
            elif key == "--shrinking" and value.lower() in POLICY_ALIASES:
                out.append(f"--shrinking={POLICY_ALIASES[value.lower()]}")
            else:
                out.append(f"{key}={value}")
        else:
            out.append(token)
        i += 1
    return out


class SuperNetCLI(LightningCLI):
    """LightningCLI over :class:`SuperNetModule`, any :class:`ClassificationDataModule`, one shrinking
    policy (default :class:`~ws_train.DelayedEpsilonShrinking`) and :class:`SubNetValidation`.

    ``args`` are parsed after :func:`normalize_args` (``None``: ``sys.argv[1:]``); an unknown
    ``--model`` name is a parser error (usage and message on stderr, ``SystemExit(2)``).
    """

    def __init__(self, args: Sequence[str] | dict | None = None, run: bool = True, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        kwargs["parser_kwargs"] = {"prog": PROG, "description": _DESCRIPTION, **(kwargs.get("parser_kwargs") or {})}
        super().__init__(
            SuperNetModule,
            ClassificationDataModule,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            args=args,
            run=run,
            **kwargs,
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Sequence[str] | dict | Namespace | None) -> None:
        """Parse ``args`` (``None``: ``sys.argv[1:]``) after expanding the shorthands (:func:`normalize_args`)."""
        if isinstance(args, (dict, Namespace)):
            super().parse_arguments(parser, args)
            return
        try:
            expanded = normalize_args(sys.argv[1:] if args is None else args)
        except ValueError as e:
            parser.error(str(e))
        self.config = parser.parse_args(expanded)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        model = parser._option_string_actions["--model"]  # jsonargparse's "--model CONFIG" of the model group
        model.metavar = "NAME|CONFIG"
        model.help = (f"a registered SuperNet, short for --model.supernet NAME (timm.list_models('ws_*'): "
                      f"{', '.join(_registered_supernets())}), or a YAML/JSON config of the --model.* arguments")
        parser.add_lightning_class_args(ShrinkingPolicy, "shrinking", subclass_mode=True, required=False)
        parser.add_lightning_class_args(SubNetValidation, "validation")
        parser.set_defaults({
            "shrinking": {"class_path": POLICY_ALIASES["des"]},
            "data": {"class_path": DATA_ALIASES["digits"]},
        })
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_argument("--supernet_out", type=str | None, default=None,
                            help="Where fit writes the trained SuperNet (ws-core safetensors checkpoint); "
                                 "default <log dir>/supernet.safetensors")

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks = [cb for cb in trainer.callbacks if cb is not None]
        return trainer

    def after_fit(self) -> None:
        out = self.config[self.subcommand].get("supernet_out")
        if not self.trainer.is_global_zero:
            return
        if out is None:
            root = self.trainer.log_dir or self.trainer.default_root_dir
            out = str(Path(root) / "supernet.safetensors")
        path = self.model.save_supernet(out)
        print(f"ws-train: SuperNet written to {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``ws-train`` command (also ``python -m ws_train``) on ``argv`` (``None``: ``sys.argv[1:]``).

    Returns 0 when the subcommand has run; ``--help`` and bad arguments exit through ``SystemExit``
    as LightningCLI does (0 and 2).
    """
    SuperNetCLI(args=None if argv is None else list(argv))
    return 0

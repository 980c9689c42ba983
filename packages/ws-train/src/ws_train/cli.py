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
``<log dir>/supernet.safetensors``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .data import ClassificationDataModule
from .module import SuperNetModule
from .policies import ShrinkingPolicy
from .validation import SubNetValidation

__all__ = ["DATA_ALIASES", "POLICY_ALIASES", "SuperNetCLI", "main", "normalize_args"]

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


def _is_supernet_name(value: str) -> bool:
    import timm

    import ws_core  # noqa: F401  (registers the ws_* models)

    return timm.is_model(value)


def normalize_args(args: Sequence[str]) -> list[str]:
    """Expand the shorthands ``--model <name>``, ``--data <alias>`` and ``--shrinking <alias>``.

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
            if key == "--model" and _is_supernet_name(value):
                out.append(f"--model.supernet={value}")
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
    policy (default :class:`~ws_train.DelayedEpsilonShrinking`) and :class:`SubNetValidation`."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("parser_kwargs", {"description": _DESCRIPTION})
        super().__init__(
            SuperNetModule,
            ClassificationDataModule,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            args=None if args is None else normalize_args(args),
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
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


def main(args: Sequence[str] | None = None) -> None:
    """Console entry point ``ws-train`` (shorthands expanded in ``sys.argv`` when ``args`` is ``None``)."""
    if args is None:
        sys.argv[1:] = normalize_args(sys.argv[1:])
    SuperNetCLI(args=args)


if __name__ == "__main__":  # pragma: no cover
    main()

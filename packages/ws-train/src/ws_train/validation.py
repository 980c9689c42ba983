"""``SubNetValidation``: per-SubNet accuracy with BN recalibration, logged through any Lightning logger.

Running BN statistics accumulated while training a SuperNet mix every SubNet that was sampled; OFA
re-estimates each SubNet's statistics on a few training batches before measuring its accuracy. At
the start of every validation epoch this callback does that for a chosen set of SubNets (ws-core's
:func:`~ws_core.bn.recalibrate_bn`, keeping each result as a :class:`~ws_core.bn.BNStatistics`), then
runs every SubNet on each validation batch Lightning's loop delivers (so ``limit_val_batches``,
distributed samplers and devices work as usual), with its own statistics applied, and updates one
``torchmetrics`` accuracy per SubNet. At the end it logs ``val/acc/<subnet-id>`` for each SubNet and
``val/acc/mean`` with ``LightningModule.log`` — TensorBoard, CSV, W&B, MLflow alike — and puts the
SuperNet's own running statistics back, so training continues exactly as without validation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from ws_core import SubNetConfig, SuperNet
from ws_core.bn import BNStatistics, recalibrate_bn, restore_bn_buffers, snapshot_bn_buffers

from .sampling import subnet_generator

__all__ = ["SubNetValidation", "calibration_loader"]

_NAMED = ("min", "max")


def calibration_loader(trainer: L.Trainer) -> Any:
    """The loader BN recalibration reads: the datamodule's ``calibration_dataloader()`` (training images
    in a fixed order), else the training loader."""
    dm = trainer.datamodule
    if dm is not None and hasattr(dm, "calibration_dataloader"):
        return dm.calibration_dataloader()
    if trainer.train_dataloader is not None:
        return trainer.train_dataloader
    if dm is not None:
        return dm.train_dataloader()
    raise ValueError(
        "BN recalibration reads training data: give the Trainer a datamodule "
        "(with calibration_dataloader() or train_dataloader()) or a train dataloader"
    )


def _supernet_of(pl_module: L.LightningModule) -> SuperNet:
    net = getattr(pl_module, "supernet", None)
    if isinstance(net, SuperNet):
        return net
    raise TypeError(
        "SubNetValidation needs a LightningModule with a ws_core.SuperNet in its `supernet` attribute "
        f"(e.g. SuperNetModule), got {type(pl_module).__name__}"
    )


class SubNetValidation(Callback):
    """Validate chosen SubNets with recalibrated BN statistics and log their accuracies.

    Args:
        subnets: which SubNets: ``"min"``, ``"max"`` and/or explicit configs (dicts or
            :class:`~ws_core.SubNetConfig`, e.g. a Pareto list from a search).
        num_random: additionally this many random SubNets (drawn once, from ``seed``).
        pareto_file: a JSON file with a list of configs (or of ``{"config": {...}}`` records) to add.
        bn_batches: training batches used to recalibrate each SubNet's BN statistics (OFA: 10 × 200 images).
        every_n_epochs: validate SubNets every n-th validation epoch (others only run the module's own step).
        seed: seed of the random SubNets.

    Attributes:
        subnets: ``{subnet id: SubNetConfig}`` once set up.
        labels: ``{subnet id: "min" | "max" | "random" | "given"}``.
        results: ``{subnet id: accuracy}`` of the last validation epoch.
        history: one ``{"epoch", "step", "acc": {id: accuracy}}`` record per validated epoch.

    Example::

        >>> import lightning as L
        >>> from ws_train import DelayedEpsilonShrinking, SubNetValidation
        >>> trainer = L.Trainer(max_epochs=4, callbacks=[DelayedEpsilonShrinking(),
        ...                                              SubNetValidation(("min", "max"), num_random=2)])
    """

    def __init__(
        self,
        subnets: Sequence[str | Mapping[str, Any]] = ("min", "max"),
        num_random: int = 0,
        pareto_file: str | None = None,
        bn_batches: int = 10,
        every_n_epochs: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(subnets, (str, Mapping)):
            subnets = [subnets]
        for s in subnets:
            if isinstance(s, str) and s not in _NAMED:
                raise ValueError(f"SubNetValidation: named SubNets allowed are {list(_NAMED)} or configs, got {s!r}")
            if not isinstance(s, (str, Mapping)):
                raise ValueError(f"SubNetValidation: each SubNet must be 'min', 'max' or a config dict, got {s!r}")
        for name, value, low in (("num_random", num_random, 0), ("bn_batches", bn_batches, 1),
                                 ("every_n_epochs", every_n_epochs, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"SubNetValidation: {name} must be an integer >= {low}, got {value!r}")
        if pareto_file is not None and not Path(pareto_file).is_file():
            raise ValueError(f"SubNetValidation: pareto_file {pareto_file!r} does not exist")
        if not subnets and not num_random and pareto_file is None:
            raise ValueError("SubNetValidation: no SubNets chosen (give subnets, num_random or pareto_file)")
        self.requested = list(subnets)
        self.num_random = num_random
        self.pareto_file = pareto_file
        self.bn_batches = bn_batches
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.subnets: dict[str, SubNetConfig] = {}
        self.labels: dict[str, str] = {}
        self.results: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self._stats: dict[str, BNStatistics] = {}
        self._metrics: dict[str, MulticlassAccuracy] = {}
        self._saved: dict[str, Tensor] | None = None
        self._active: SubNetConfig | None = None

    @property
    def state_key(self) -> str:
        """Unique per configuration, so several SubNetValidation callbacks can share a Trainer and a checkpoint."""
        requested = [s if isinstance(s, str) else SubNetConfig(s).id for s in self.requested]
        return self._generate_state_key(subnets=requested, num_random=self.num_random, pareto_file=self.pareto_file,
                                        every_n_epochs=self.every_n_epochs, seed=self.seed)

    # Setup -----------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        net = _supernet_of(pl_module)
        space = net.space
        chosen: list[tuple[str, SubNetConfig]] = []
        for s in self.requested:
            if s == "min":
                chosen.append(("min", space.min()))
            elif s == "max":
                chosen.append(("max", space.max()))
            else:
                chosen.append(("given", space.validate(s)))
        if self.pareto_file is not None:
            records = json.loads(Path(self.pareto_file).read_text())
            if not isinstance(records, list):
                raise ValueError(
                    f"{self.pareto_file}: expected a JSON list of SubNet configs, got {type(records).__name__}"
                )
            for r in records:
                chosen.append(("given", space.validate(r.get("config", r))))
        for i in range(self.num_random):
            chosen.append(("random", space.sample(subnet_generator(self.seed, 0, i))))
        self.subnets, self.labels = {}, {}
        for label, cfg in chosen:
            if cfg.id not in self.subnets:
                self.subnets[cfg.id] = cfg
                self.labels[cfg.id] = label

    # Validation loop -------------------------------------------------------------------------------
    def _enabled(self, trainer: L.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if trainer.state.fn == TrainerFn.FITTING:  # same rule as Trainer(check_val_every_n_epoch=n)
            return (trainer.current_epoch + 1) % self.every_n_epochs == 0
        return True

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stats = {}
        if not self._enabled(trainer):
            return
        net = _supernet_of(pl_module)
        self._active = net.active
        self._saved = snapshot_bn_buffers(net)
        for sid, cfg in self.subnets.items():
            # a fresh loader per SubNet: a datamodule's calibration loader then gives every SubNet the same images
            loader = calibration_loader(trainer)
            self._stats[sid] = recalibrate_bn(net, loader, cfg, num_batches=self.bn_batches, device=pl_module.device)
        self._restore(net)
        num_classes = getattr(net, "num_classes", None)
        if not num_classes:
            raise ValueError("SubNetValidation needs a classifier SuperNet (num_classes > 0)")
        self._metrics = {sid: MulticlassAccuracy(num_classes, average="micro").to(pl_module.device)
                         for sid in self.subnets}

    @torch.no_grad()
    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self._stats or dataloader_idx != 0:
            return
        net = _supernet_of(pl_module)
        x, y = batch[0], batch[1]
        resize = getattr(pl_module, "_resize", None)
        for sid, cfg in self.subnets.items():
            self._stats[sid].apply(net)
            with net.subnet(cfg):
                xi = resize(x, cfg) if resize is not None else x
                self._metrics[sid].update(net(xi), y)
        self._restore(net)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._stats:
            return
        results = {sid: float(m.compute()) for sid, m in self._metrics.items()}
        for sid, acc in results.items():
            pl_module.log(f"val/acc/{sid}", acc)
        mean = sum(results.values()) / len(results)
        pl_module.log("val/acc/mean", mean)
        self.results = results
        self.history.append({"epoch": trainer.current_epoch, "step": trainer.global_step, "acc": dict(results)})
        for m in self._metrics.values():
            m.reset()
        self._stats = {}
        net = _supernet_of(pl_module)
        self._restore(net)
        self._saved = None

    # Helpers ---------------------------------------------------------------------------------------
    def accuracy(self, which: str) -> float:
        """Last accuracy of ``"min"``, ``"max"`` or a SubNet id."""
        for sid, label in self.labels.items():
            if label == which:
                return self.results[sid]
        return self.results[which]

    def _restore(self, net: SuperNet) -> None:
        if self._saved is None:
            return
        restore_bn_buffers(net, self._saved)
        if self._active is not None:
            net.activate(self._active)

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(h, acc=dict(h["acc"])) for h in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

"""LightningModules: the search (a :class:`~ws_nas.supernet.CellSuperNet`) and the retraining of a genotype.

* :class:`SearchModule` trains the network weights ``w`` and the precision parameters ``γ`` on the
  train split with ``CE + λ · complexity`` (one SGD optimizer, two parameter groups: weights with a
  cosine schedule, ``γ`` at a constant rate); the architecture parameters ``α``/``β`` are updated
  by the :class:`~ws_nas.callback.NablaQDARTS` callback on the held-out split, which also sets ``λ``
  (``complexity_weight``).
* :class:`RetrainModule` trains the fixed network of a genotype (:class:`~ws_nas.network.DARTSNetwork`)
  from scratch with SGD + cosine, and reports accuracy, BitOps and model size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from .cost import CostReport, cost_report
from .genotype import Genotype
from .network import DARTSNetwork
from .supernet import CellSuperNet

__all__ = ["RetrainModule", "SearchModule", "cosine_factor"]


def cosine_factor(epoch: int, max_epochs: int, min_ratio: float) -> float:
    """Cosine annealing factor at ``epoch`` of ``max_epochs``: from 1 down to ``min_ratio``."""
    t = min(epoch, max_epochs) / max(1, max_epochs)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def _batch(batch: Any, key: str = "train"):
    return batch[key] if isinstance(batch, dict) else batch


class _Classifier(L.LightningModule):
    def __init__(self, num_classes: int):
        super().__init__()
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self.network(x)
        self.val_acc.update(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=False)
        self.log("val_acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.test_acc.update(self.network(x), y)
        self.log("test_acc", self.test_acc)

    def _sgd(self, groups: list[dict], lr: float, min_lr: float, momentum: float):
        max_epochs = self.trainer.max_epochs if self.trainer is not None else None
        if not max_epochs or max_epochs < 1:  # no fixed length: no annealing
            min_ratio, max_epochs = 1.0, 1
        else:
            min_ratio = min_lr / lr
        lambdas = [(lambda e: cosine_factor(e, max_epochs, min_ratio)) if g.pop("cosine", True) else (lambda e: 1.0)
                   for g in groups]
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class SearchModule(_Classifier):
    """The search LightningModule of ∇QDARTS / DARTS: a :class:`CellSuperNet` as ``self.network``.

    Args:
        num_classes, in_chans, C, layers, steps, multiplier, stem_multiplier, primitives, bits,
            partial_channels, edge_normalization: the :class:`CellSuperNet`.
        partial_channels: PC-DARTS's ``K`` (1/K of the channels through each mixed op). ``None``: ∇QDARTS's
            CIFAR setting ``K = 4``, or for networks too narrow for it (``C / K`` must be even) the largest
            of 2, 1 that fits (e.g. ``C = 4`` → 2).
        input_size: image height = width (for the MACs behind the complexity term).
        lr: initial learning rate of the weights (∇QDARTS: 0.1; DARTS: 0.025), cosine-annealed to ``min_lr``.
        min_lr: final learning rate of the weights.
        momentum, weight_decay: SGD of the weights (DARTS: 0.9, 3e-4).
        precision_lr, precision_weight_decay: SGD of ``γ`` (∇QDARTS: 0.01, 1e-3), constant rate.
        grad_clip: gradient-norm clipping of the weights (DARTS: 5; 0 disables).

    Example::

        >>> module = SearchModule(in_chans=1, input_size=8, C=8, layers=3, bits=(2, 4))
        >>> trainer = L.Trainer(max_epochs=20, callbacks=[NablaQDARTS(complexity_weight=1e-3)])  # doctest: +SKIP
        >>> trainer.fit(module, ImageClassificationData(held_out_fraction=0.5))                   # doctest: +SKIP
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        input_size: int = 32,
        C: int = 16,
        layers: int = 8,
        steps: int = 4,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        primitives: Sequence[str] | None = None,
        bits: Sequence[int] | None = (2, 4),
        partial_channels: int | None = None,
        edge_normalization: bool = False,
        lr: float = 0.1,
        min_lr: float = 0.0,
        momentum: float = 0.9,
        weight_decay: float = 3e-4,
        precision_lr: float = 0.01,
        precision_weight_decay: float = 1e-3,
        grad_clip: float = 5.0,
    ):
        super().__init__(num_classes)
        _positive("lr", lr)
        _positive("min_lr", min_lr, allow_zero=True)
        _positive("precision_lr", precision_lr)
        for name, v in (("momentum", momentum), ("weight_decay", weight_decay),
                        ("precision_weight_decay", precision_weight_decay), ("grad_clip", grad_clip)):
            _positive(name, v, allow_zero=True)
        self.save_hyperparameters()
        if partial_channels is None:  # ∇QDARTS / PC-DARTS on CIFAR: K = 4 (ImageNet: 2)
            partial_channels = next((k for k in (4, 2, 1) if C % k == 0 and (C // k) % 2 == 0), 1)
        self.network = CellSuperNet(
            num_classes=num_classes, C=C, layers=layers, steps=steps, multiplier=multiplier,
            stem_multiplier=stem_multiplier, in_chans=in_chans, primitives=primitives,
            bits=None if bits is None else list(bits), partial_channels=partial_channels,
            edge_normalization=edge_normalization,
        )
        self.input_size = input_size
        #: λ of the complexity term; set by the NablaQDARTS callback.
        self.complexity_weight = 0.0
        self.network.trace(input_size)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = _batch(batch, "train")
        logits = self.network(x)
        loss = F.cross_entropy(logits, y)
        n = x.shape[0]
        self.log("train_ce", loss, prog_bar=True, batch_size=n)
        if self.network.has_precision_mixtures:
            complexity = self.network.complexity()
            self.log("complexity", complexity.detach(), batch_size=n)
            if self.complexity_weight > 0:
                loss = loss + self.complexity_weight * complexity
        self.log("train_loss", loss, batch_size=n)
        return loss

    @torch.no_grad()
    def on_train_epoch_end(self) -> None:
        if self.network.has_precision_mixtures:
            convs = self.network.mixed_convs()
            macs = sum(m.macs for m in convs)
            self.log("expected_weight_bits", sum(m.macs * float(m.expected_weight_bits()) for m in convs) / macs)
            self.log("expected_act_bits", sum(m.macs * float(m.expected_act_bits()) for m in convs) / macs)

    def configure_optimizers(self):
        h = self.hparams
        groups = [{"params": self.network.weight_parameters(), "lr": h.lr, "weight_decay": h.weight_decay}]
        if self.network.precision_parameters():
            groups.append({"params": self.network.precision_parameters(), "lr": h.precision_lr,
                           "weight_decay": h.precision_weight_decay, "cosine": False})
        return self._sgd(groups, h.lr, h.min_lr, h.momentum)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        clip = gradient_clip_val or self.hparams.grad_clip
        if clip:
            torch.nn.utils.clip_grad_norm_(self.network.weight_parameters(), clip)

    def genotype(self) -> Genotype:
        return self.network.genotype()


class RetrainModule(_Classifier):
    """Train the fixed network of a genotype from scratch (DARTS evaluation protocol, scaled down).

    Args:
        genotype: a :class:`Genotype`, its dict or JSON, or a path to its JSON file.
        num_classes, in_chans, C, layers, stem_multiplier, precision, drop_path_prob: the
            :class:`DARTSNetwork`.
        input_size: image height = width (for :meth:`cost_report`).
        lr, min_lr, momentum, weight_decay: SGD with cosine annealing (DARTS evaluation: 0.025, 0, 0.9, 3e-4).
        grad_clip: gradient-norm clipping (DARTS: 5; 0 disables).
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(
        self,
        genotype: Genotype | dict | str,
        num_classes: int = 10,
        in_chans: int = 3,
        input_size: int = 32,
        C: int = 36,
        layers: int = 20,
        stem_multiplier: int = 3,
        precision: str | Sequence[int] = "genotype",
        drop_path_prob: float = 0.0,
        lr: float = 0.025,
        min_lr: float = 0.0,
        momentum: float = 0.9,
        weight_decay: float = 3e-4,
        grad_clip: float = 5.0,
        label_smoothing: float = 0.0,
    ):
        super().__init__(num_classes)
        _positive("lr", lr)
        _positive("min_lr", min_lr, allow_zero=True)
        for name, v in (("momentum", momentum), ("weight_decay", weight_decay), ("grad_clip", grad_clip),
                        ("label_smoothing", label_smoothing)):
            _positive(name, v, allow_zero=True)
        genotype = Genotype.parse(genotype)
        self.save_hyperparameters(ignore=["genotype"])
        self.hparams["genotype"] = genotype.to_dict()
        self.network = DARTSNetwork(genotype, num_classes=num_classes, C=C, layers=layers, in_chans=in_chans,
                                    stem_multiplier=stem_multiplier,
                                    precision=precision if isinstance(precision, str) else list(precision),
                                    drop_path_prob=drop_path_prob)
        self.input_size = input_size

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = _batch(batch)
        logits = self.network(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        self.log("train_loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def configure_optimizers(self):
        h = self.hparams
        groups = [{"params": list(self.network.parameters()), "lr": h.lr, "weight_decay": h.weight_decay}]
        return self._sgd(groups, h.lr, h.min_lr, h.momentum)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        clip = gradient_clip_val or self.hparams.grad_clip
        if clip:
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), clip)

    def cost_report(self) -> CostReport:
        """BitOps, MACs and model size of the network for one ``input_size`` image."""
        return cost_report(self.network, self.input_size, self.hparams.in_chans)

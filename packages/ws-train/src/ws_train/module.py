"""``SuperNetModule``: a LightningModule that trains any ws-core SuperNet, one policy-chosen set of SubNets per step.

Each training step asks the active shrinking policy (a :class:`~ws_train.ShrinkingPolicy` callback:
:class:`~ws_train.DelayedEpsilonShrinking`, :class:`~ws_train.ProgressiveShrinking`,
:class:`~ws_train.SandwichRule`) which SubNets to train and with which losses and gradient weights β,
then, for each SubNet in turn: activate it in place (ws-core, no weight copies), forward, compute its
loss, ``backward`` scaled by β — gradients accumulate — and finally takes **one** optimizer step.
Only one SubNet's graph is alive at a time (OFA's memory profile).

* the max net trains on the labels with label smoothing (dropout on);
* the others distill from the max net's detached soft targets (temperature ``kd_temperature``,
  dropout off — BigNAS's "regularise only the biggest child"), or, in OFA's phases, learn from the
  labels plus a frozen teacher's soft targets (dropout on, as in OFA);
* without a policy callback the module trains the max net alone (plain supervised training).

Determinism: SubNets are sampled from ``(policy seed, global step, index)`` and every step's other
randomness (dropout) runs under a forked RNG seeded from ``(seed, global step, rank)``, so all DDP
ranks train the same SubNets and a run resumed from a checkpoint repeats the uninterrupted run.

Multi-GPU and multi-node training is Lightning's DDP (``Trainer(strategy="ddp_find_unused_parameters_true")``):
depth-elastic SubNets skip blocks, so DDP must look for unused parameters; SyncBatchNorm would replace
ws-core's elastic BN layers and is rejected.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import lightning as L
import timm
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

import ws_core  # noqa: F401  (registers the ws_* SuperNets in timm)
from ws_core import SuperNet

from .losses import distillation_loss, soft_targets
from .sampling import SubNetTask, subnet_seed
from .schedules import cosine_lr

__all__ = ["SuperNetModule", "build_supernet", "run_length"]

_OPTIMIZERS = ("sgd", "adamw")
_LR_SCHEDULES = ("cosine", "constant")


def build_supernet(name: str, num_classes: int | None = None, **kwargs: Any) -> SuperNet:
    """``timm.create_model(name, num_classes=..., **kwargs)``, checked to be a ws-core SuperNet."""
    if not timm.is_model(name):
        raise ValueError(f"unknown SuperNet {name!r}; allowed: {timm.list_models('ws_*')}")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    net = timm.create_model(name, **kwargs)
    if not isinstance(net, SuperNet):
        raise TypeError(
            f"model {name!r} is a {type(net).__name__}, not a ws_core.SuperNet; allowed: {timm.list_models('ws_*')}"
        )
    return net


def run_length(trainer: L.Trainer) -> tuple[int, float]:
    """``(optimizer steps of the run, optimizer steps per epoch)`` of a fitting ``trainer``.

    One optimizer step per batch (all SubNets of a step accumulate into one update).
    """
    total = trainer.estimated_stepping_batches
    if not math.isfinite(total) or total < 1:
        raise ValueError(f"SuperNet training needs a finite run: set Trainer(max_epochs=...) or max_steps, got {total}")
    per_epoch = trainer.num_training_batches
    if not math.isfinite(per_epoch) or per_epoch < 1:
        per_epoch = total
    return int(total), float(per_epoch)


class SuperNetModule(L.LightningModule):
    """Train a weight-shared SuperNet with Lightning; add one shrinking-policy callback to choose SubNets.

    Args:
        supernet: a :class:`ws_core.SuperNet`, or the name of one in timm's registry (``"ws_ofa_mbv3_035_32"``).
        num_classes: classifier outputs when ``supernet`` is a name (``None``: the model's default); when
            it is a module, must be ``None`` or equal to its ``num_classes``.
        model_kwargs: extra ``timm.create_model`` arguments (``drop_rate``, ``kernel_transform``, ...).
        optimizer: ``"sgd"`` (Nesterov momentum, OFA/DεpS) or ``"adamw"``.
        lr: peak learning rate.
        momentum: SGD momentum (AdamW: β₁).
        nesterov: Nesterov momentum for SGD.
        weight_decay: weight decay (applied once per step, i.e. not per SubNet).
        lr_schedule: ``"cosine"`` (to ``min_lr`` over the whole run, DεpS) or ``"constant"``.
        min_lr: floor of the cosine schedule.
        warmup_epochs: linear learning-rate warm-up (epochs, may be fractional).
        label_smoothing: label smoothing of the max net's (and OFA SubNets') cross-entropy.
        kd_temperature: temperature of the distillation losses.
        kd_ratio: weight of the teacher term in OFA's ``teacher_kd`` loss (``CE + kd_ratio · KD``).
        grad_clip_norm: clip the accumulated gradient to this norm before the step (``None``: no clipping).
        seed: seeds each step's forked RNG (dropout) together with the global step and rank.
        val_bn_batches: ``val/loss`` and ``val/acc`` are the max SubNet's, with its BN statistics
            recalibrated on this many training batches at the start of each validation epoch (the
            SuperNet's running statistics mix every SubNet trained; they are put back afterwards);
            ``0`` validates with the running statistics as they are.
        channels_last: train and validate in ``torch.channels_last`` memory format (faster depthwise
            convolutions on CPU; same values up to rounding).

    Example::

        >>> import lightning as L
        >>> from ws_train import DelayedEpsilonShrinking, DigitsDataModule, SuperNetModule
        >>> module = SuperNetModule("ws_ofa_mbv3_035_32", num_classes=10, lr=0.05)
        >>> trainer = L.Trainer(max_epochs=4, callbacks=[DelayedEpsilonShrinking()])
        >>> trainer.fit(module, DigitsDataModule())          # doctest: +SKIP
    """

    def __init__(
        self,
        supernet: SuperNet | str = "ws_ofa_mbv3_035_32",
        num_classes: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 3e-5,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        min_lr: float = 0.0,
        warmup_epochs: float = 0.0,
        label_smoothing: float = 0.1,
        kd_temperature: float = 1.0,
        kd_ratio: float = 1.0,
        grad_clip_norm: float | None = None,
        seed: int = 0,
        val_bn_batches: int = 4,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(val_bn_batches, bool) or not isinstance(val_bn_batches, int) or val_bn_batches < 0:
            raise ValueError(f"val_bn_batches must be an integer >= 0, got {val_bn_batches!r}")
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(_OPTIMIZERS)}, got {optimizer!r}")
        if lr_schedule not in _LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {list(_LR_SCHEDULES)}, got {lr_schedule!r}")
        for name, value in (("lr", lr), ("kd_temperature", kd_temperature)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        for name, value in (("min_lr", min_lr), ("warmup_epochs", warmup_epochs), ("weight_decay", weight_decay),
                            ("kd_ratio", kd_ratio)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        if grad_clip_norm is not None and not grad_clip_norm > 0:
            raise ValueError(f"grad_clip_norm must be > 0 or None, got {grad_clip_norm!r}")

        if isinstance(supernet, str):
            net = build_supernet(supernet, num_classes, **(model_kwargs or {}))
            self.save_hyperparameters()
        elif isinstance(supernet, SuperNet):
            if model_kwargs:
                raise ValueError("model_kwargs apply only when supernet is a registered name, got a SuperNet instance")
            if num_classes is not None and num_classes != getattr(supernet, "num_classes", num_classes):
                raise ValueError(f"num_classes={num_classes} but the SuperNet has {supernet.num_classes} classes")
            net = supernet
            self.save_hyperparameters(ignore=["supernet"])
        else:
            raise TypeError(
                "supernet must be a ws_core.SuperNet or the name of a registered one "
                f"({timm.list_models('ws_*')}), got {type(supernet).__name__}"
            )
        self.supernet = net
        self.automatic_optimization = False
        self.num_classes = int(getattr(net, "num_classes", 0)) or None
        self.val_accuracy = MulticlassAccuracy(self.num_classes, average="micro") if self.num_classes else None
        #: the shrinking policy attached by its ``setup`` (``None``: train the max net only).
        self.policy: Any = None
        #: ``(global step, [SubNetTask, ...])`` of the last training step (for records and logs).
        self.last_plan: tuple[int, list[SubNetTask]] | None = None
        self._dropouts = [m for m in net.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        space = net.space
        self._elastic_resolution = "resolution" in space.names and len(space["resolution"].choices) > 1
        self._total_steps = 1
        self._warmup_steps = 0
        self._val_snapshot: dict[str, Tensor] | None = None
        self._val_stats: Any = None  # the max SubNet's recalibrated BNStatistics during a validation epoch
        # channel sorting permutes weights with copy_, which keeps this memory format
        if channels_last:
            net.to(memory_format=torch.channels_last)

    # Plain forward ---------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        return self.supernet(x)

    # Learning-rate schedule ------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """The learning rate of the max net at optimizer step ``step`` (a pure function of the step)."""
        hp = self.hparams
        if hp.lr_schedule == "constant":
            return hp.lr if step >= self._warmup_steps else hp.lr * (step + 1) / self._warmup_steps
        return cosine_lr(step, self._total_steps, hp.lr, hp.min_lr, self._warmup_steps)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        self._total_steps, steps_per_epoch = run_length(self.trainer)
        self._warmup_steps = round(hp.warmup_epochs * steps_per_epoch)
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(self.supernet.parameters(), lr=hp.lr, momentum=hp.momentum,
                                  nesterov=hp.nesterov and hp.momentum > 0, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.AdamW(self.supernet.parameters(), lr=hp.lr, betas=(hp.momentum, 0.999),
                                    weight_decay=hp.weight_decay)
        base = hp.lr
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: self.lr_at(step) / base)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # Training --------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy if self._trainer is not None else None
        if isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get("find_unused_parameters", False):
            raise ValueError(
                "SuperNetModule under DDP needs find_unused_parameters=True (depth-elastic SubNets skip blocks): "
                "use strategy='ddp_find_unused_parameters_true' or DDPStrategy(find_unused_parameters=True), "
                f"got {type(strategy).__name__}(find_unused_parameters=False)"
            )

    def on_fit_start(self) -> None:
        if any(isinstance(m, nn.SyncBatchNorm) for m in self.supernet.modules()):
            raise ValueError(
                "sync_batchnorm=True replaces ws-core's elastic BatchNorm layers (SubNets could no longer slice "
                "them); allowed: Trainer(sync_batchnorm=False)"
            )

    def default_plan(self) -> list[SubNetTask]:
        """The plan without a policy: the max net on the labels."""
        return [SubNetTask(self.supernet.space.max(), 1.0, "ce", "max")]

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
        step = self.global_step
        tasks = self.policy.plan(step) if self.policy is not None else self.default_plan()
        self.last_plan = (step, tasks)
        opt = self.optimizers()
        sched = self.lr_schedulers()
        opt.zero_grad(set_to_none=True)
        hp = self.hparams
        targets: Tensor | None = None
        teacher_targets: dict[int, Tensor] = {}
        losses: list[Tensor] = []
        with self._step_rng(step):
            for task in tasks:
                if task.weight <= 0:
                    continue
                xi = self._resize(x, task.config)
                self.supernet.activate(task.config)
                with self._dropout(task.loss != "inplace_kd"):
                    logits = self.supernet(xi)
                if task.loss == "ce":
                    loss = F.cross_entropy(logits, y, label_smoothing=hp.label_smoothing)
                elif task.loss == "inplace_kd":
                    if targets is None:
                        raise RuntimeError(
                            "an 'inplace_kd' SubNet needs the max net earlier in the same step; the policy's plan "
                            f"was {[t.role + ':' + t.loss for t in tasks]}"
                        )
                    loss = distillation_loss(logits, targets, hp.kd_temperature)
                else:
                    teacher = teacher_targets.get(xi.shape[-1])
                    if teacher is None:
                        teacher = self._teacher_targets(xi)
                        teacher_targets[xi.shape[-1]] = teacher
                    loss = F.cross_entropy(logits, y, label_smoothing=hp.label_smoothing)
                    loss = loss + hp.kd_ratio * distillation_loss(logits, teacher, hp.kd_temperature)
                if task.role == "max" and targets is None:
                    targets = soft_targets(logits, hp.kd_temperature)
                self.manual_backward(loss * task.weight)
                losses.append(loss.detach())
        self.supernet.activate(self.supernet.space.max())
        if self.policy is not None:  # DεpS's gradient aggregation over the SubNets (sum: left as accumulated)
            self.policy.aggregate_gradients(self.supernet, tasks)
        if hp.grad_clip_norm is not None:
            self.clip_gradients(opt, gradient_clip_val=hp.grad_clip_norm, gradient_clip_algorithm="norm")
        lr = float(sched.get_last_lr()[0])
        opt.step()
        sched.step()

        total = torch.stack(losses).sum() if losses else torch.zeros((), device=x.device)
        others = [t.weight for t in tasks if t.role != "max"]
        self.log("train/loss", total, prog_bar=True)
        if tasks[0].role == "max" and losses:
            self.log("train/loss_max", losses[0])
        self.log("train/subnets", float(sum(t.weight > 0 for t in tasks)))
        self.log("train/beta", float(max(others)) if others else 0.0)
        self.log("train/lr", lr)
        return {"loss": total, "losses": torch.stack(losses) if losses else total.reshape(1)}

    def _teacher_targets(self, x: Tensor) -> Tensor:
        teacher = getattr(self.policy, "teacher", None)
        if teacher is None:
            raise RuntimeError("a 'teacher_kd' SubNet needs a policy with a teacher (ProgressiveShrinking)")
        with torch.no_grad():
            return soft_targets(teacher(x), self.hparams.kd_temperature)

    def _resize(self, x: Tensor, cfg: Mapping[str, Any]) -> Tensor:
        if self.hparams.get("channels_last") and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if not self._elastic_resolution:
            return x
        r = int(cfg["resolution"])
        if x.shape[-1] == r and x.shape[-2] == r:
            return x
        return F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)

    @contextmanager
    def _dropout(self, enabled: bool) -> Iterator[None]:
        if enabled or not self._dropouts:
            yield
            return
        modes = [m.training for m in self._dropouts]
        try:
            for m in self._dropouts:
                m.training = False
            yield
        finally:
            for m, mode in zip(self._dropouts, modes):
                m.training = mode

    @contextmanager
    def _step_rng(self, step: int) -> Iterator[None]:
        devices = [self.device.index if self.device.index is not None else torch.cuda.current_device()] \
            if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(subnet_seed(self.hparams.seed, step, 1_000_003 + self.global_rank))
            yield

    # Evaluation ------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        net = self.supernet
        net.activate(net.space.max())
        if self.hparams.get("val_bn_batches", 0) and self._trainer is not None:
            from ws_core.bn import recalibrate_bn, snapshot_bn_buffers

            from .validation import calibration_loader

            self._val_snapshot = snapshot_bn_buffers(net)
            self._val_stats = recalibrate_bn(net, calibration_loader(self.trainer), net.space.max(),
                                             num_batches=self.hparams.val_bn_batches, device=self.device)

    def on_validation_epoch_end(self) -> None:
        if self._val_snapshot is not None:
            from ws_core.bn import restore_bn_buffers

            restore_bn_buffers(self.supernet, self._val_snapshot)
        self._val_snapshot = self._val_stats = None

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Loss and accuracy of the max SubNet, with its BN statistics recalibrated (``val_bn_batches``)
        or, with ``val_bn_batches=0``, the SuperNet's running statistics; per-SubNet accuracies come from
        :class:`~ws_train.SubNetValidation`."""
        x, y = batch[0], batch[1]
        if self._val_stats is not None:  # callbacks may have swapped statistics in between batches
            self._val_stats.apply(self.supernet)
        logits = self.supernet(self._resize(x, self.supernet.active))
        loss = F.cross_entropy(logits, y)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        if self.val_accuracy is not None:
            self.val_accuracy.update(logits, y)
            self.log("val/acc", self.val_accuracy, prog_bar=True)
        return loss

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self.supernet(self._resize(x, self.supernet.active))
        loss = F.cross_entropy(logits, y)
        self.log("test/loss", loss, sync_dist=True)
        return loss

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Logits of the active SubNet (``module.supernet.activate(cfg)`` before ``trainer.predict``; the
        max net after ``fit``) for a batch ``(images, labels)`` or ``images``, resized to its resolution."""
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.supernet(self._resize(x, self.supernet.active))

    # Export ----------------------------------------------------------------------------------------
    def save_supernet(self, path: str, extra: Mapping[str, Any] | None = None) -> Any:
        """Write the SuperNet as a ws-core checkpoint (safetensors + JSON, atomic); returns the path."""
        from ws_core.checkpoint import save_checkpoint

        with self.supernet.subnet(self.supernet.space.max()):
            return save_checkpoint(self.supernet, path, extra)

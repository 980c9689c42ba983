"""Shrinking policies as Lightning callbacks: Delayed ε-Shrinking, OFA progressive shrinking, BigNAS sandwich.

A shrinking policy decides, for every optimizer step, which SubNets :class:`~ws_train.SuperNetModule`
trains, with which loss and gradient weight β. :class:`ShrinkingPolicy` owns the mechanism —
checks at ``setup``, resolving the run length, step-seeded sampling, channel sorting, counters,
checkpoint state — and each subclass overrides one policy method, :meth:`ShrinkingPolicy.plan`
(plus, where it has them, the events of its schedule in :meth:`ShrinkingPolicy.on_step_start`):

=========================  ===================================================================================
policy                     SubNets per step
=========================  ===================================================================================
DelayedEpsilonShrinking    max only until the ε ramp; then max + min + 2 random with inplace distillation, β
                           ramping up to full weight at ``warmup_fraction`` of the run (T_w); channels sorted
                           once when the SubNets join; ``sum`` / ``avg`` gradient aggregation
ProgressiveShrinking       OFA phases full → kernel → depth → expand (1, 1, 2, 2, 4, 4 SubNets), each SubNet
                           on labels + a frozen teacher copied from the full net; channels sorted per width
                           phase; the learning rate restarts in every phase at OFA's per-phase rate
SandwichRule               max + min + 2 random with inplace distillation from step 0 (BigNAS), last BN of
                           every residual block zero-initialised, exponential lr decay with a constant ending
=========================  ===================================================================================

Learning rate: a policy may set the schedule itself (:meth:`ShrinkingPolicy.lr_at`: OFA's per-phase
restarts, BigNAS's exponential decay). When fitting starts it then takes over
``SuperNetModule.lr_at`` — the function the module's ``LambdaLR`` and DεS's β read — for the run
(``lr_schedule="module"`` keeps the module's own cosine / constant schedule).

Channel sorting and optimizer state: ``SuperNet.sort_channels`` permutes channels of the weights in
place. Momentum buffers (and Adam's moments) are per element, so after a sort they would push the
wrong channels; ws-core does not expose the permutations, so the policy clears the optimizer state at
every sort (SGD momentum rebuilds within ~1/(1−m) = 10 steps). The checkpoint after a sort holds the
sorted weights, the cleared-then-rebuilt optimizer state and the "already sorted" flag, so a resumed
run neither sorts twice nor diverges from the uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from ws_core import SearchSpace
from ws_core.elastic import ElasticStage

from .sampling import SubNetTask, restrict_space, sandwich_tasks, subnet_generator
from .schedules import (
    BIGNAS_FINAL_LR_FRACTION,
    BIGNAS_LR_DECAY,
    BIGNAS_LR_DECAY_EPOCHS,
    OFA_PHASE_EPOCHS,
    OFA_PHASE_LR,
    OFA_PHASE_WARMUP,
    DelayedShrinkingSchedule,
    bignas_lr,
    delayed_shrinking_schedule,
    epsilon_beta,
    progressive_shrinking_lr,
    progressive_shrinking_phases,
)

__all__ = [
    "GRADIENT_AGGREGATIONS",
    "OFA_PHASES",
    "DelayedEpsilonShrinking",
    "ProgressiveShrinking",
    "SandwichRule",
    "ShrinkingPhase",
    "ShrinkingPolicy",
    "aggregate_gradients",
    "zero_init_last_bn_",
]

#: DεpS's ``--gradient_aggregation`` choices: ``sum`` (its recipes' choice), ``avg``, ``avg_sqrt``.
GRADIENT_AGGREGATIONS = ("sum", "avg", "avg_sqrt")


def aggregate_gradients(
    grads: Mapping[str, Tensor],
    subnets: Sequence[tuple[float, Mapping[str, tuple[slice, ...]]]],
    mode: str = "sum",
) -> None:
    """DεpS's gradient aggregation over the SubNets of one step, in place on ``grads``.

    ``grads[name]`` holds the accumulated ``Σ_k β_k ∇_k`` of the step's SubNets (each SubNet's gradient
    is zero outside the sub-tensor it reads, DεpS's mask). ``subnets`` gives, per SubNet, its weight β_k
    and the region of each tensor it reads (``SuperNet.weight_slices``), i.e. its mask. Then, per element:

    * ``"sum"``: unchanged — ``Σ_k β_k ∇_k``;
    * ``"avg"``: ``Σ_k β_k ∇_k / Σ_k β_k mask_k``;
    * ``"avg_sqrt"``: ``Σ_k β_k ∇_k / sqrt(Σ_k β_k mask_k)``.

    Elements no SubNet reads (``Σ_k β_k mask_k = 0``, zero gradient) are left as they are.

    Example::

        >>> g = {"w": torch.tensor([1.0, 2.0, 3.0, 4.0])}
        >>> aggregate_gradients(g, [(1.0, {"w": (slice(0, 4),)}), (0.5, {"w": (slice(0, 2),)})], "avg")
        >>> g["w"]                               # the first two elements are read with weights 1 + 0.5
        tensor([0.6667, 1.3333, 3.0000, 4.0000])
    """
    if mode not in GRADIENT_AGGREGATIONS:
        raise ValueError(f"gradient aggregation must be one of {list(GRADIENT_AGGREGATIONS)}, got {mode!r}")
    if mode == "sum":
        return
    for name, grad in grads.items():
        if grad is None:
            continue
        total = torch.zeros_like(grad)
        for weight, regions in subnets:
            region = regions.get(name)
            if region is not None and weight > 0:
                total[region] += weight
        read = total > 0
        denom = total[read] if mode == "avg" else total[read].sqrt()
        grad[read] = grad[read] / denom


def _is_residual(block: nn.Module) -> bool:
    skip = getattr(block, "has_skip", None)  # MBConv: identity shortcut when stride 1 and in == out
    if skip is not None:
        return bool(skip)
    return hasattr(block, "downsample")  # ResNet bottleneck: always a shortcut (identity or projection)


def zero_init_last_bn_(supernet: nn.Module) -> list[str]:
    """BigNAS's initialisation: zero the scale γ of the last BatchNorm in every residual block, in place.

    A residual block then starts as the identity. The blocks are those of the SuperNet's elastic stages
    (``ElasticStage.blocks``) with a shortcut (MBConv ``has_skip``; every ResNet bottleneck, whose last BN
    is the main branch's, not the projection shortcut's) — as DεpS's ``initialize_bn_with_bignas``, which
    also leaves the fixed first block of the stem alone. Blocks without BatchNorm (transformer blocks)
    are skipped. Returns the names of the BatchNorm layers zeroed.

    Example::

        >>> zero_init_last_bn_(timm.create_model("ws_ofa_mbv3_035_32"))[:2]    # doctest: +SKIP
        ['stages.0.blocks.0.bn3', 'stages.0.blocks.1.bn3']
    """
    zeroed = []
    for stage_name, stage in supernet.named_modules():
        if not isinstance(stage, ElasticStage):
            continue
        for i, block in enumerate(stage.blocks):
            if not _is_residual(block):
                continue
            norms = [(n, m) for n, m in block.named_modules()
                     if isinstance(m, nn.BatchNorm2d) and m.weight is not None and not n.startswith("downsample")]
            if not norms:
                continue
            name, bn = norms[-1]
            with torch.no_grad():
                bn.weight.zero_()
            zeroed.append(f"{stage_name}.blocks.{i}.{name}")
    return zeroed


def _check_nonneg_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value


class ShrinkingPolicy(Callback):
    """Base class of shrinking policies (the mechanism); subclasses implement :meth:`plan`.

    Args:
        seed: seeds SubNet sampling together with the global step and the SubNet's index.

    Attributes:
        total_steps: optimizer steps of the run (set when fitting starts).
        steps_per_epoch: optimizer steps per epoch.
        subnet_passes: SubNet forward/backward passes trained so far (the training cost in SubNet-steps).
        sort_steps: the global steps at which channels were sorted.
    """

    #: DεpS's gradient aggregation over the SubNets of a step (``"sum"``: as accumulated by backward).
    gradient_aggregation = "sum"

    def __init__(self, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.total_steps: int | None = None
        self.steps_per_epoch: float | None = None
        self.subnet_passes = 0
        self.sort_steps: list[int] = []
        self._module: Any = None

    # The policy ------------------------------------------------------------------------------------
    def plan(self, step: int) -> list[SubNetTask]:
        """The SubNets to train at optimizer step ``step`` (the max net first when others distill from it)."""
        raise NotImplementedError

    def configure(self, total_steps: int, steps_per_epoch: float) -> None:
        """Resolve the schedule for a run of ``total_steps`` steps; raise ``ValueError`` if it cannot fit."""

    def on_step_start(self, step: int, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Events before the step's SubNets train (channel sorting, teacher snapshots)."""

    def lr_at(self, step: int) -> float | None:
        """The learning rate at optimizer step ``step`` when the policy sets the schedule, else ``None``
        (the module's own schedule applies). Called only once fitting has started."""
        return None

    def aggregate_gradients(self, supernet: nn.Module, tasks: Sequence[SubNetTask]) -> None:
        """Called by ``SuperNetModule`` after the step's backward passes: aggregate the accumulated
        gradients over the SubNets (:func:`aggregate_gradients` with :attr:`gradient_aggregation`)."""
        if self.gradient_aggregation == "sum":
            return
        subnets = [(t.weight, supernet.weight_slices(t.config)) for t in tasks if t.weight > 0]
        grads = {n: p.grad for n, p in supernet.named_parameters() if p.grad is not None}
        aggregate_gradients(grads, subnets, self.gradient_aggregation)

    def _module_warmup_steps(self) -> int:
        """The module's linear warm-up (``warmup_epochs``) in steps, as ``SuperNetModule`` counts it."""
        return round(float(self._module.hparams.get("warmup_epochs", 0.0)) * self.steps_per_epoch)

    def _install_lr_schedule(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Fitting has started, so the module's optimizer and LambdaLR exist (configure_optimizers ran).
        # The LambdaLR computes each step's rate as module.lr_at(step) / lr, so the policy's schedule
        # takes over by shadowing module.lr_at for this run (undone in teardown); the rate of the
        # current step, which the LambdaLR set at construction, is recomputed. A checkpoint being resumed
        # restores the optimizer's and scheduler's state afterwards — written by this same schedule.
        if self.lr_at(0) is None:
            return
        pl_module.lr_at = self.lr_at
        for config in trainer.lr_scheduler_configs:
            sched = config.scheduler
            lambdas = getattr(sched, "lr_lambdas", None)
            if lambdas is None:
                continue
            for group, base, fn in zip(sched.optimizer.param_groups, sched.base_lrs, lambdas):
                group["lr"] = base * fn(sched.last_epoch)
            sched._last_lr = [group["lr"] for group in sched.optimizer.param_groups]

    @property
    def space(self) -> SearchSpace:
        if self._module is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to a SuperNetModule yet (Trainer.fit sets it)")
        return self._module.supernet.space

    # Mechanism -------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from .module import SuperNetModule

        if not isinstance(pl_module, SuperNetModule):
            raise TypeError(
                f"{type(self).__name__} trains a SuperNetModule (a LightningModule over a ws_core.SuperNet), "
                f"got {type(pl_module).__name__}"
            )
        policies = [type(cb).__name__ for cb in trainer.callbacks if isinstance(cb, ShrinkingPolicy)]
        if len(policies) > 1:
            raise ValueError(f"a Trainer takes exactly one shrinking policy callback, got {len(policies)}: {policies}")
        pl_module.policy = self
        self._module = pl_module

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if getattr(pl_module, "policy", None) is self:
            pl_module.policy = None
        if getattr(pl_module, "__dict__", {}).get("lr_at") == self.lr_at:  # the module's own schedule again
            del pl_module.__dict__["lr_at"]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from .module import run_length

        self.total_steps, self.steps_per_epoch = run_length(trainer)
        self.configure(self.total_steps, self.steps_per_epoch)
        self._install_lr_schedule(trainer, pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.on_step_start(trainer.global_step, trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        plan = getattr(pl_module, "last_plan", None)
        if plan is not None:
            self.subnet_passes += sum(1 for t in plan[1] if t.weight > 0)

    def sort_channels(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, nested: bool) -> None:
        """Importance-sort the SuperNet's channels and clear the optimizer state (see module docstring)."""
        pl_module.supernet.sort_channels(nested=nested)
        for opt in trainer.optimizers:
            opt.state.clear()
        self.sort_steps.append(int(step))

    def state_dict(self) -> dict[str, Any]:
        return {"subnet_passes": self.subnet_passes, "sort_steps": list(self.sort_steps)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.subnet_passes = int(state_dict.get("subnet_passes", 0))
        self.sort_steps = [int(s) for s in state_dict.get("sort_steps", [])]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"


class SandwichRule(ShrinkingPolicy):
    """BigNAS's sandwich rule with inplace distillation, from the first step.

    Every step trains the max net on the labels (label smoothing) and the min net plus ``num_random``
    uniformly random SubNets on the max net's detached soft targets; one optimizer step follows.
    With BigNAS's defaults, when fitting starts the last BatchNorm γ of every residual block is zeroed
    (:func:`zero_init_last_bn_`; once per run — not again on resume) and the learning rate decays
    exponentially with a constant ending (:func:`~ws_train.schedules.bignas_lr`: × ``lr_decay`` every
    ``lr_decay_epochs`` epochs down to ``final_lr_fraction`` of the module's ``lr``, after its
    ``warmup_epochs``).

    Args:
        num_random: random SubNets per step besides max and min (BigNAS: 2).
        zero_init_last_bn: BigNAS's zero-initialised last BN γ of each residual block.
        lr_schedule: ``"bignas"`` (exponential decay with a constant ending) or ``"module"`` (the
            module's own schedule, e.g. cosine).
        lr_decay, lr_decay_epochs: the exponential decay: × ``lr_decay`` every ``lr_decay_epochs`` epochs
            (0.97 every 2.4 epochs: EfficientNet's, whose recipe BigNAS follows — unconfirmed).
        final_lr_fraction: the constant ending, as a fraction of the initial rate (BigNAS: 5%).
        seed: sampling seed.

    Example::

        >>> trainer = L.Trainer(max_epochs=10, callbacks=[SandwichRule()])   # doctest: +SKIP
    """

    def __init__(
        self,
        num_random: int = 2,
        zero_init_last_bn: bool = True,
        lr_schedule: Literal["bignas", "module"] = "bignas",
        lr_decay: float = BIGNAS_LR_DECAY,
        lr_decay_epochs: float = BIGNAS_LR_DECAY_EPOCHS,
        final_lr_fraction: float = BIGNAS_FINAL_LR_FRACTION,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        self.num_random = _check_nonneg_int("num_random", num_random)
        if lr_schedule not in ("bignas", "module"):
            raise ValueError(f"lr_schedule must be one of ['bignas', 'module'], got {lr_schedule!r}")
        if isinstance(lr_decay, bool) or not isinstance(lr_decay, (int, float)) or not 0 < lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay!r}")
        if isinstance(lr_decay_epochs, bool) or not isinstance(lr_decay_epochs, (int, float)) \
                or not (math.isfinite(lr_decay_epochs) and lr_decay_epochs > 0):
            raise ValueError(f"lr_decay_epochs must be a number > 0, got {lr_decay_epochs!r}")
        if isinstance(final_lr_fraction, bool) or not isinstance(final_lr_fraction, (int, float)) \
                or not 0 <= final_lr_fraction <= 1:
            raise ValueError(f"final_lr_fraction must be in [0, 1], got {final_lr_fraction!r}")
        self.zero_init_last_bn = bool(zero_init_last_bn)
        self.lr_schedule = lr_schedule
        self.lr_decay = float(lr_decay)
        self.lr_decay_epochs = float(lr_decay_epochs)
        self.final_lr_fraction = float(final_lr_fraction)
        #: names of the BatchNorm layers zeroed at the start of this run (empty until then, or on resume).
        self.zeroed_bn: list[str] = []
        self.initialized = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        # Lightning has loaded a resumed checkpoint's weights (and this callback's state) before this hook:
        # the zero-initialisation is for a fresh run only.
        if self.zero_init_last_bn and not self.initialized and trainer.ckpt_path is None:
            self.zeroed_bn = zero_init_last_bn_(pl_module.supernet)
        self.initialized = True

    def lr_at(self, step: int) -> float | None:
        if self.lr_schedule == "module":
            return None
        return bignas_lr(step, self.steps_per_epoch, float(self._module.hparams.lr), self.lr_decay,
                         self.lr_decay_epochs, self.final_lr_fraction, self._module_warmup_steps())

    def plan(self, step: int) -> list[SubNetTask]:
        return sandwich_tasks(self.space, step, self.seed, self.num_random)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["initialized"] = self.initialized
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.initialized = bool(state_dict.get("initialized", False))

    def __repr__(self) -> str:
        return (f"SandwichRule(num_random={self.num_random}, zero_init_last_bn={self.zero_init_last_bn}, "
                f"lr_schedule={self.lr_schedule!r}, seed={self.seed})")


class DelayedEpsilonShrinking(ShrinkingPolicy):
    """Delayed ε-Shrinking (DεpS, Annavajjala et al., ECCV 2024).

    With ``T_w`` = ``warmup_fraction`` of the steps (DεpS's ``teacher_warmup``) and ``S`` the ε-ramp length
    (DεpS's ``smallnet_warmup``):

    1. **FM-warmup** — steps ``[0, T_w − S)`` train the full (max) model alone.
    2. At ``T_w − S`` channels are importance-sorted once (``SuperNet.sort_channels``) and the SubNets
       join: max + min + ``num_random`` random per step, inplace distillation from the partly trained,
       co-evolving max net (**IKD-warmup**).
    3. **ε-shrinking** — over ``[T_w − S, T_w)`` the SubNets' gradient weight β ramps up from ~0; from
       ``T_w`` on β = ``subnet_weight``. With ``ramp="lr"`` (the paper's code) a SubNet's effective
       learning rate β·η(t) rises linearly to ``subnet_weight × η(T_w)``; ``ramp="linear"`` makes β
       itself linear. ``S`` is ``ramp_epochs`` or ``ramp_fraction`` of the run; by default DεpS's 5
       epochs (cut to ``T_w`` in runs whose ``T_w`` is shorter than 5 epochs).
    4. The SubNets' gradients are summed (``gradient_aggregation="sum"``, DεpS's recipes) or averaged per
       element over the SubNets that read each weight (``"avg"``, ``"avg_sqrt"``: :func:`aggregate_gradients`).

    Args:
        warmup_fraction: ``T_w`` as a fraction of the steps, in ``[0, 1)`` (DεpS ImageNet: 150 of 270 epochs).
        ramp_epochs: length ``S`` of the ε ramp in epochs (``0``: no ramp, the "without ε-shrinking" ablation).
        ramp_fraction: length of the ε ramp as a fraction of all steps (instead of ``ramp_epochs``).
        num_random: random SubNets per step besides max and min (paper: 2, i.e. 4 SubNets per step).
        ramp: ``"lr"`` or ``"linear"`` (see above).
        subnet_weight: β after the ramp (the paper's ``multiplier``, 1).
        sort_channels: sort channels once when the SubNets join (the paper's ``--reorganize_weights``).
        gradient_aggregation: ``"sum"``, ``"avg"`` or ``"avg_sqrt"`` (the paper's ``--gradient_aggregation``).
        seed: sampling seed.

    Example::

        >>> import lightning as L
        >>> trainer = L.Trainer(max_epochs=20, callbacks=[DelayedEpsilonShrinking(warmup_fraction=0.5)])
    """

    def __init__(
        self,
        warmup_fraction: float = 0.5,
        ramp_epochs: float | None = None,
        ramp_fraction: float | None = None,
        num_random: int = 2,
        ramp: Literal["lr", "linear"] = "lr",
        subnet_weight: float = 1.0,
        sort_channels: bool = True,
        gradient_aggregation: Literal["sum", "avg", "avg_sqrt"] = "sum",
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        # checks that need the run length (does the ramp fit?) happen when fitting starts
        for name, value in (("warmup_fraction", warmup_fraction), ("ramp_fraction", ramp_fraction)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
        if ramp_fraction is not None and not 0.0 <= ramp_fraction <= 1.0:
            raise ValueError(f"ramp_fraction must be in [0, 1], got {ramp_fraction!r}")
        if ramp_epochs is not None and (isinstance(ramp_epochs, bool) or not ramp_epochs >= 0):
            raise ValueError(f"ramp_epochs must be a number >= 0, got {ramp_epochs!r}")
        if ramp_epochs is not None and ramp_fraction is not None:
            raise ValueError(
                f"give the ε ramp as ramp_epochs or as ramp_fraction, not both (got ramp_epochs={ramp_epochs}, "
                f"ramp_fraction={ramp_fraction})"
            )
        if ramp not in ("lr", "linear"):
            raise ValueError(f"ramp must be one of ['lr', 'linear'], got {ramp!r}")
        if not subnet_weight > 0:
            raise ValueError(f"subnet_weight must be > 0, got {subnet_weight!r}")
        if gradient_aggregation not in GRADIENT_AGGREGATIONS:
            raise ValueError(f"gradient_aggregation must be one of {list(GRADIENT_AGGREGATIONS)}, "
                             f"got {gradient_aggregation!r}")
        self.gradient_aggregation = gradient_aggregation
        self.warmup_fraction = float(warmup_fraction)
        self.ramp_epochs = ramp_epochs
        self.ramp_fraction = ramp_fraction
        self.num_random = _check_nonneg_int("num_random", num_random)
        self.ramp = ramp
        self.subnet_weight = float(subnet_weight)
        self.sort = bool(sort_channels)
        self.schedule: DelayedShrinkingSchedule | None = None
        self.sorted = False

    def configure(self, total_steps: int, steps_per_epoch: float) -> None:
        self.schedule = delayed_shrinking_schedule(
            total_steps, steps_per_epoch, self.warmup_fraction, self.ramp_epochs, self.ramp_fraction
        )

    def _schedule(self) -> DelayedShrinkingSchedule:
        if self.schedule is None:
            raise RuntimeError("DelayedEpsilonShrinking: the schedule is resolved when fitting starts")
        return self.schedule

    def phase(self, step: int) -> str:
        """``"warmup"`` (full model alone, before ``T_w − S``), ``"ramp"`` (the ε ramp ``[T_w − S, T_w)``) or
        ``"shrink"`` (from ``T_w``: all SubNets at full weight)."""
        s = self._schedule()
        if step < s.ramp_start:
            return "warmup"
        return "ramp" if step < s.switch_step else "shrink"

    def beta(self, step: int) -> float:
        """The SubNets' gradient weight β at ``step``."""
        s = self._schedule()
        if self.ramp == "lr" and self._module is not None:
            return epsilon_beta(step, s.switch_step, s.ramp_steps, self.subnet_weight,
                                lr=self._module.lr_at(step), lr_at_full=self._module.lr_at(s.full_step))
        return epsilon_beta(step, s.switch_step, s.ramp_steps, self.subnet_weight)

    def on_step_start(self, step: int, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.sort and not self.sorted and step >= self._schedule().ramp_start:
            self.sort_channels(trainer, pl_module, step, nested=False)
            self.sorted = True

    def plan(self, step: int) -> list[SubNetTask]:
        return sandwich_tasks(self.space, step, self.seed, self.num_random, weight=self.beta(step))

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["sorted"] = self.sorted
        if self.schedule is not None:  # informational: recomputed from the run length on resume
            state["switch_step"] = self.schedule.switch_step
            state["ramp_steps"] = self.schedule.ramp_steps
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.sorted = bool(state_dict.get("sorted", False))

    def __repr__(self) -> str:
        ramp = (f"ramp_fraction={self.ramp_fraction}" if self.ramp_fraction is not None
                else f"ramp_epochs={self.ramp_epochs}")
        return (f"DelayedEpsilonShrinking(warmup_fraction={self.warmup_fraction}, {ramp}, "
                f"num_random={self.num_random}, ramp={self.ramp!r}, "
                f"gradient_aggregation={self.gradient_aggregation!r}, seed={self.seed})")


@dataclass(frozen=True)
class ShrinkingPhase:
    """One OFA progressive-shrinking phase.

    Attributes:
        name: ``"full"``, ``"kernel"``, ``"depth_a"``, ...
        elastic: dimension group → how many of its largest choices are allowed (``None``: all). Groups:
            ``"kernel"`` (dimension ``kernel``), ``"depth"`` (``depth``), ``"expand"`` (every other
            dimension but ``resolution``: ``expand``, ResNet's ``width``...). ``resolution`` is elastic
            in every phase, as in OFA.
        sort_channels: importance-sort channels (nested) when the phase starts.
    """

    name: str
    elastic: Mapping[str, int | None]
    sort_channels: bool = False


#: OFA's phases (paper App. B): full; kernel; depth {4,3} then {4,3,2}; expand {6,4} then {6,4,3}.
OFA_PHASES = (
    ShrinkingPhase("full", {}),
    ShrinkingPhase("kernel", {"kernel": None}),
    ShrinkingPhase("depth_a", {"kernel": None, "depth": 2}),
    ShrinkingPhase("depth", {"kernel": None, "depth": None}),
    ShrinkingPhase("expand_a", {"kernel": None, "depth": None, "expand": 2}, sort_channels=True),
    ShrinkingPhase("expand", {"kernel": None, "depth": None, "expand": None}, sort_channels=True),
)


def _phase_space(space: SearchSpace, phase: ShrinkingPhase) -> SearchSpace:
    allowed: dict[str, tuple] = {}
    for d in space.dimensions:
        if d.name == "resolution":
            continue
        group = d.name if d.name in ("kernel", "depth") else "expand"
        if group in phase.elastic:
            k = phase.elastic[group]
            allowed[d.name] = d.choices if k is None else d.choices[-k:]
        else:
            allowed[d.name] = (d.choices[-1],)
    return restrict_space(space, allowed)


class ProgressiveShrinking(ShrinkingPolicy):
    """OFA's progressive shrinking in one run: phases full → kernel → depth → expand.

    The run is split into :data:`OFA_PHASES` with lengths proportional to ``phase_weights`` (OFA's
    180/125/25/125/25/125 epochs by default). The first phase trains the full net on the labels; when
    the next phase starts, a frozen copy of the full net (``SuperNet.extract`` of the max net, in eval
    mode) becomes the **teacher**, and from then on
    every sampled SubNet learns ``CE_ls(labels) + kd_ratio · KD(teacher)`` (``SuperNetModule.kd_ratio``).
    Each phase samples uniformly among its allowed choices (``subnets_per_step`` SubNets per step;
    OFA: 1, 1, 2, 2, 4, 4); width phases start with nested channel sorting. Phases that add no
    elastic choice for this SuperNet (e.g. "kernel" for OFA-ResNet) merge into the previous one.

    Learning rate (``lr_schedule="per_phase"``, OFA's): every phase restarts a cosine schedule
    (:func:`~ws_train.schedules.progressive_shrinking_lr`) from its own initial rate — the module's
    ``lr`` × ``phase_lr[i] / phase_lr[0]`` (OFA: 2.6, 0.96, 0.08, 0.24, 0.08, 0.24) — after a linear
    warm-up over ``phase_warmup[i]`` of the phase (OFA: 5 of the 125 epochs of kernel, depth 2 and
    expand 2; the first phase also keeps the module's ``warmup_epochs``), down to ``min_lr`` × the same
    ratio at the phase's end. ``lr_schedule="module"`` keeps the module's one schedule over the run.

    Args:
        phase_weights: 6 non-negative relative phase lengths.
        subnets_per_step: 6 SubNet counts per step, one per phase.
        sort_channels: nested channel sorting at the start of the width phases.
        lr_schedule: ``"per_phase"`` (OFA) or ``"module"``.
        phase_lr: 6 positive initial learning rates, relative to the first phase's (the module's ``lr``).
        phase_warmup: 6 warm-up lengths, each a fraction in ``[0, 1)`` of its phase.
        seed: sampling seed.
    """

    def __init__(
        self,
        phase_weights: Sequence[float] = OFA_PHASE_EPOCHS,
        subnets_per_step: Sequence[int] = (1, 1, 2, 2, 4, 4),
        sort_channels: bool = True,
        lr_schedule: Literal["per_phase", "module"] = "per_phase",
        phase_lr: Sequence[float] = OFA_PHASE_LR,
        phase_warmup: Sequence[float] = OFA_PHASE_WARMUP,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        n = len(OFA_PHASES)
        weights = list(phase_weights)
        if len(weights) != n or any(isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0
                                    for w in weights) or sum(weights) <= 0:
            raise ValueError(
                f"phase_weights must be {n} numbers >= 0 with a positive sum (phases "
                f"{[p.name for p in OFA_PHASES]}), got {list(phase_weights)}"
            )
        counts = list(subnets_per_step)
        if len(counts) != n or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in counts):
            raise ValueError(f"subnets_per_step must be {n} integers >= 1, got {list(subnets_per_step)}")
        if lr_schedule not in ("per_phase", "module"):
            raise ValueError(f"lr_schedule must be one of ['per_phase', 'module'], got {lr_schedule!r}")
        rates = list(phase_lr)
        if len(rates) != n or any(isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0
                                  for r in rates):
            raise ValueError(f"phase_lr must be {n} numbers > 0, got {list(phase_lr)}")
        warm = list(phase_warmup)
        if len(warm) != n or any(isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < 1
                                 for w in warm):
            raise ValueError(f"phase_warmup must be {n} fractions in [0, 1), got {list(phase_warmup)}")
        self.phase_weights = tuple(float(w) for w in weights)
        self.subnets_per_step = tuple(counts)
        self.sort = bool(sort_channels)
        self.lr_schedule = lr_schedule
        self.phase_lr = tuple(float(r) for r in rates)
        self.phase_warmup = tuple(float(w) for w in warm)
        self.teacher: Any = None
        self.sorted_phases: list[str] = []
        self.phases: list[tuple[ShrinkingPhase, int, int, int]] = []  # (phase, start, end, subnets per step)
        self._spaces: list[SearchSpace] = []
        self._phase_index: list[int] = []  # index into OFA_PHASES (and phase_lr / phase_warmup) of each phase
        self._teacher_state: dict[str, Any] | None = None

    def configure(self, total_steps: int, steps_per_epoch: float) -> None:
        bounds = progressive_shrinking_phases(total_steps, self.phase_weights)
        self.phases, self._spaces, self._phase_index = [], [], []
        for k, (phase, (start, end), count) in enumerate(zip(OFA_PHASES, bounds, self.subnets_per_step)):
            space = _phase_space(self.space, phase)
            if self._spaces and space == self._spaces[-1]:  # adds nothing here: extend the previous phase
                prev, pstart, _, pcount = self.phases[-1]
                self.phases[-1] = (prev, pstart, end, pcount)
                continue
            if end > start or not self.phases:  # phases left empty by a very short run are dropped
                self.phases.append((phase, start, end, count))
                self._spaces.append(space)
                self._phase_index.append(k)

    def lr_at(self, step: int) -> float | None:
        """OFA's per-phase learning rate (``lr_schedule="per_phase"``), see the class docstring."""
        if self.lr_schedule == "module":
            return None
        if not self.phases:
            raise RuntimeError("ProgressiveShrinking: phases are resolved when fitting starts")
        hp = self._module.hparams
        spans = [(start, end) for _, start, end, _ in self.phases]
        rates = [self.phase_lr[k] for k in self._phase_index]
        warmup = [round(self.phase_warmup[k] * (end - start)) for k, (start, end) in zip(self._phase_index, spans)]
        warmup[0] = max(warmup[0], self._module_warmup_steps())
        return progressive_shrinking_lr(step, spans, float(hp.lr), rates, warmup, float(hp.get("min_lr", 0.0)))

    def phase_index(self, step: int) -> int:
        if not self.phases:
            raise RuntimeError("ProgressiveShrinking: phases are resolved when fitting starts")
        for i, (_, start, end, _) in enumerate(self.phases):
            if start <= step < end:
                return i
        return len(self.phases) - 1

    def phase(self, step: int) -> str:
        """Name of the phase of ``step``."""
        return self.phases[self.phase_index(step)][0].name

    def on_step_start(self, step: int, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        i = self.phase_index(step)
        phase = self.phases[i][0]
        if i > 0 and self.teacher is None:
            self.teacher = self._make_teacher(pl_module)
        if self.sort and phase.sort_channels and phase.name not in self.sorted_phases:
            self.sort_channels(trainer, pl_module, step, nested=True)
            self.sorted_phases.append(phase.name)

    def _make_teacher(self, pl_module: L.LightningModule) -> Any:
        # A static copy of the full net (ws-core ``extract``: plain layers, copied weights and BN
        # statistics) — OFA's teacher is likewise a static network loaded from the full-net checkpoint.
        net = pl_module.supernet
        teacher = net.extract(net.space.max())
        if self._teacher_state is not None:
            teacher.load_state_dict(self._teacher_state)
            self._teacher_state = None
        teacher.eval()
        teacher.requires_grad_(False)
        return teacher

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        if self._teacher_state is not None:
            self.teacher = self._make_teacher(pl_module)

    def plan(self, step: int) -> list[SubNetTask]:
        i = self.phase_index(step)
        _, _, _, count = self.phases[i]
        space = self._spaces[i]
        if i == 0:
            return [SubNetTask(space.sample(subnet_generator(self.seed, step, 0)), 1.0, "ce", "max")]
        return [SubNetTask(space.sample(subnet_generator(self.seed, step, k)), 1.0, "teacher_kd", "random")
                for k in range(count)]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["sorted_phases"] = list(self.sorted_phases)
        teacher = self.teacher.state_dict() if self.teacher is not None else self._teacher_state
        state["teacher"] = {k: v.detach().cpu().clone() for k, v in teacher.items()} if teacher else None
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.sorted_phases = [str(p) for p in state_dict.get("sorted_phases", [])]
        self._teacher_state = state_dict.get("teacher")
        self.teacher = None

    def __repr__(self) -> str:
        return (f"ProgressiveShrinking(phase_weights={list(self.phase_weights)}, "
                f"subnets_per_step={list(self.subnets_per_step)}, lr_schedule={self.lr_schedule!r}, "
                f"seed={self.seed})")

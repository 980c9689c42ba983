"""Shrinking policies as Lightning callbacks: Delayed ε-Shrinking, OFA progressive shrinking, BigNAS sandwich.

A shrinking policy decides, for every optimizer step, which SubNets :class:`~ws_train.SuperNetModule`
trains, with which loss and gradient weight β. :class:`ShrinkingPolicy` owns the mechanism —
checks at ``setup``, resolving the run length, step-seeded sampling, channel sorting, counters,
checkpoint state — and each subclass overrides one policy method, :meth:`ShrinkingPolicy.plan`
(plus, where it has them, the events of its schedule in :meth:`ShrinkingPolicy.on_step_start`):

=========================  ===================================================================================
policy                     SubNets per step
=========================  ===================================================================================
DelayedEpsilonShrinking    max only for ``warmup_fraction`` of the run; then max + min + 2 random with inplace
                           distillation, β ramping up over the ε ramp; channels sorted once at the switch
ProgressiveShrinking       OFA phases full → kernel → depth → expand (1, 1, 2, 2, 4, 4 SubNets), each SubNet
                           on labels + a frozen teacher copied from the full net; channels sorted per width phase
SandwichRule               max + min + 2 random with inplace distillation from step 0 (BigNAS)
=========================  ===================================================================================

Channel sorting and optimizer state: ``SuperNet.sort_channels`` permutes channels of the weights in
place. Momentum buffers (and Adam's moments) are per element, so after a sort they would push the
wrong channels; ws-core does not expose the permutations, so the policy clears the optimizer state at
every sort (SGD momentum rebuilds within ~1/(1−m) = 10 steps). The checkpoint after a sort holds the
sorted weights, the cleared-then-rebuilt optimizer state and the "already sorted" flag, so a resumed
run neither sorts twice nor diverges from the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import Callback

from ws_core import SearchSpace

from .sampling import SubNetTask, restrict_space, sandwich_tasks, subnet_generator
from .schedules import (
    OFA_PHASE_EPOCHS,
    DelayedShrinkingSchedule,
    delayed_shrinking_schedule,
    epsilon_beta,
    progressive_shrinking_phases,
)

__all__ = [
    "OFA_PHASES",
    "DelayedEpsilonShrinking",
    "ProgressiveShrinking",
    "SandwichRule",
    "ShrinkingPhase",
    "ShrinkingPolicy",
]


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

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from .module import run_length

        self.total_steps, self.steps_per_epoch = run_length(trainer)
        self.configure(self.total_steps, self.steps_per_epoch)

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

    Args:
        num_random: random SubNets per step besides max and min (BigNAS: 2).
        seed: sampling seed.

    Example::

        >>> trainer = L.Trainer(max_epochs=10, callbacks=[SandwichRule()])   # doctest: +SKIP
    """

    def __init__(self, num_random: int = 2, seed: int = 0) -> None:
        super().__init__(seed)
        self.num_random = _check_nonneg_int("num_random", num_random)

    def plan(self, step: int) -> list[SubNetTask]:
        return sandwich_tasks(self.space, step, self.seed, self.num_random)

    def __repr__(self) -> str:
        return f"SandwichRule(num_random={self.num_random}, seed={self.seed})"


class DelayedEpsilonShrinking(ShrinkingPolicy):
    """Delayed ε-Shrinking (DεpS, Annavajjala et al., ECCV 2024).

    1. **FM-warmup** — the first ``warmup_fraction`` of the steps train the full (max) model alone.
    2. At the switch, channels are importance-sorted once (``SuperNet.sort_channels``) and the
       SubNets join: max + min + ``num_random`` random per step, inplace distillation from the
       partly trained, co-evolving max net (**IKD-warmup**).
    3. **ε-shrinking** — the SubNets' gradient weight β ramps from 0 to ``subnet_weight`` over the ε
       ramp (``ramp_epochs``, or ``ramp_fraction`` of the run; default 5 epochs capped at 10% of the
       run). With ``ramp="lr"`` (the paper's code) a SubNet's effective learning rate β·η(t) rises
       linearly to the learning rate the max net has when the ramp ends; ``ramp="linear"`` makes β
       itself linear.

    Args:
        warmup_fraction: fraction of the steps that train the full model alone, in ``[0, 1)`` (paper: ~0.5).
        ramp_epochs: length of the ε ramp in epochs (``0``: no ramp, the "without ε-shrinking" ablation).
        ramp_fraction: length of the ε ramp as a fraction of all steps (instead of ``ramp_epochs``).
        num_random: random SubNets per step besides max and min (paper: 2, i.e. 4 SubNets per step).
        ramp: ``"lr"`` or ``"linear"`` (see above).
        subnet_weight: β after the ramp (the paper's ``multiplier``, 1).
        sort_channels: sort channels once at the switch (the paper's ``--reorganize_weights``).
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
        """``"warmup"`` (full model alone), ``"ramp"`` (ε ramp) or ``"shrink"`` (all SubNets at full weight)."""
        s = self._schedule()
        if step < s.switch_step:
            return "warmup"
        return "ramp" if step < s.full_step else "shrink"

    def beta(self, step: int) -> float:
        """The SubNets' gradient weight β at ``step``."""
        s = self._schedule()
        if self.ramp == "lr" and self._module is not None:
            return epsilon_beta(step, s.switch_step, s.ramp_steps, self.subnet_weight,
                                lr=self._module.lr_at(step), lr_at_full=self._module.lr_at(s.full_step))
        return epsilon_beta(step, s.switch_step, s.ramp_steps, self.subnet_weight)

    def on_step_start(self, step: int, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.sort and not self.sorted and step >= self._schedule().switch_step:
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
                f"num_random={self.num_random}, "
                f"ramp={self.ramp!r}, seed={self.seed})")


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

    Unlike OFA's separate runs, the learning rate follows one schedule over the whole run.

    Args:
        phase_weights: 6 non-negative relative phase lengths.
        subnets_per_step: 6 SubNet counts per step, one per phase.
        sort_channels: nested channel sorting at the start of the width phases.
        seed: sampling seed.
    """

    def __init__(
        self,
        phase_weights: Sequence[float] = OFA_PHASE_EPOCHS,
        subnets_per_step: Sequence[int] = (1, 1, 2, 2, 4, 4),
        sort_channels: bool = True,
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
        self.phase_weights = tuple(float(w) for w in weights)
        self.subnets_per_step = tuple(counts)
        self.sort = bool(sort_channels)
        self.teacher: Any = None
        self.sorted_phases: list[str] = []
        self.phases: list[tuple[ShrinkingPhase, int, int, int]] = []  # (phase, start, end, subnets per step)
        self._spaces: list[SearchSpace] = []
        self._teacher_state: dict[str, Any] | None = None

    def configure(self, total_steps: int, steps_per_epoch: float) -> None:
        bounds = progressive_shrinking_phases(total_steps, self.phase_weights)
        self.phases, self._spaces = [], []
        for phase, (start, end), count in zip(OFA_PHASES, bounds, self.subnets_per_step):
            space = _phase_space(self.space, phase)
            if self._spaces and space == self._spaces[-1]:  # adds nothing here: extend the previous phase
                prev, pstart, _, pcount = self.phases[-1]
                self.phases[-1] = (prev, pstart, end, pcount)
                continue
            if end > start or not self.phases:  # phases left empty by a very short run are dropped
                self.phases.append((phase, start, end, count))
                self._spaces.append(space)

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
                f"subnets_per_step={list(self.subnets_per_step)}, seed={self.seed})")

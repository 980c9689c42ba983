"""Pure schedule functions of SuperNet training: DεS switch and ε ramp, OFA phases and their learning
rates, BigNAS's and the cosine learning rate.

Everything here is a function of integers and floats — no trainer, no model — so the schedules can be
unit-tested on hand-computed values and reused by any training loop. Steps are optimizer steps
(one per batch: all SubNets of a step accumulate into one update).

* **Delayed ε-Shrinking** (DεpS, Annavajjala et al., ECCV 2024): the full model trains alone (FM-warmup)
  until ``T_w − S``; over the ε ramp ``[T_w − S, T_w)`` the SubNets join with a gradient weight β
  rising from ~0, and from the *switch step* ``T_w`` (``warmup_fraction`` of the steps, DεpS's
  ``teacher_warmup``) on they train at full weight — :func:`delayed_shrinking_schedule`,
  :func:`epsilon_beta`.
* **Progressive shrinking** (OFA, Cai et al., ICLR 2020): consecutive phases full → kernel → depth →
  expand whose lengths are proportional to the paper's epochs — :func:`progressive_shrinking_phases` —
  each with its own learning-rate schedule restarted at its first step (OFA trains each phase as a
  separate run) — :func:`progressive_shrinking_lr`.
* **BigNAS** (Yu et al., ECCV 2020): exponential decay with a constant ending — :func:`bignas_lr`.
* :func:`cosine_lr` — the cosine learning-rate schedule (optional linear warm-up, floor ``min_lr``)
  used by :class:`~ws_train.SuperNetModule`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BIGNAS_FINAL_LR_FRACTION",
    "BIGNAS_LR_DECAY",
    "BIGNAS_LR_DECAY_EPOCHS",
    "DEFAULT_RAMP_EPOCHS",
    "OFA_PHASE_EPOCHS",
    "OFA_PHASE_LR",
    "OFA_PHASE_WARMUP",
    "DelayedShrinkingSchedule",
    "bignas_lr",
    "cosine_lr",
    "delayed_shrinking_schedule",
    "epsilon_beta",
    "epsilon_ramp",
    "progressive_shrinking_lr",
    "progressive_shrinking_phases",
    "warmup_switch_epoch",
    "warmup_switch_step",
]

#: DεpS's ``smallnet_warmup`` S: the ε ramp lasts 5 epochs (DεpS's default and every recipe of its paper).
DEFAULT_RAMP_EPOCHS = 5.0
#: OFA progressive-shrinking epochs per phase (paper App. B): full 180, kernel 125, depth 25 + 125,
#: expand 25 + 125 (605 in all).
OFA_PHASE_EPOCHS = (180.0, 125.0, 25.0, 125.0, 25.0, 125.0)
#: OFA's initial learning rate of each phase (paper App. B; ``train_ofa_net.py``: ``base_lr`` × 32 GPUs):
#: full 2.6, kernel 0.96 (3e-2), depth 0.08 (2.5e-3) then 0.24 (7.5e-3), expand 0.08 then 0.24. Only the
#: ratios matter here: phase ``i`` starts at ``lr × OFA_PHASE_LR[i] / OFA_PHASE_LR[0]``.
OFA_PHASE_LR = (2.6, 0.96, 0.08, 0.24, 0.08, 0.24)
#: OFA's warm-up of each phase as a fraction of the phase (``train_ofa_net.py``: 5 warm-up epochs before the
#: 120 cosine epochs of kernel, depth phase 2 and expand phase 2, i.e. 5 / 125; none in the 25-epoch phases).
OFA_PHASE_WARMUP = (0.0, 5 / 125, 0.0, 5 / 125, 0.0, 5 / 125)
#: BigNAS's learning rate: exponential decay with a constant ending at 5% of the initial rate (BigNAS §3.1).
BIGNAS_FINAL_LR_FRACTION = 0.05
#: The decay rate and period (0.97 every 2.4 epochs) are EfficientNet's, whose training recipe BigNAS
#: follows; they are not in our notes on the BigNAS paper (``/work/shared/research/training.md`` §2.1) —
#: unconfirmed, and parameters of :func:`bignas_lr` / ``SandwichRule``.
BIGNAS_LR_DECAY = 0.97
BIGNAS_LR_DECAY_EPOCHS = 2.4


def _check_fraction(name: str, value: float, low_open: bool = False, high_open: bool = False) -> float:
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    ok = (
        not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        and (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    )
    if not ok:
        raise ValueError(f"{name} must be in {lo}0, 1{hi}, got {value!r}")
    return float(value)


def warmup_switch_step(total_steps: int, warmup_fraction: float) -> int:
    """DεS's switch step ``T_w`` (DεpS's ``teacher_warmup``): ``round(warmup_fraction × total_steps)``.

    From ``T_w`` on the SubNets train at full weight; the ε ramp that brings them in ends here
    (it runs over ``[T_w − S, T_w)``, see :func:`delayed_shrinking_schedule`).

    Example::

        >>> warmup_switch_step(1000, 0.5)
        500
    """
    _check_fraction("warmup_fraction", warmup_fraction, high_open=True)
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    return round(warmup_fraction * total_steps)


def warmup_switch_epoch(max_epochs: float, warmup_fraction: float) -> float:
    """The switch epoch ``T_w`` (possibly fractional): ``warmup_fraction × max_epochs``.

    Example::

        >>> warmup_switch_epoch(270, 0.5)   # DεpS's ImageNet recipe: T_w = 150 of 270 (warmup_fraction ≈ 0.556)
        135.0
    """
    _check_fraction("warmup_fraction", warmup_fraction, high_open=True)
    if max_epochs <= 0:
        raise ValueError(f"max_epochs must be > 0, got {max_epochs}")
    return float(warmup_fraction * max_epochs)


@dataclass(frozen=True)
class DelayedShrinkingSchedule:
    """Where DεS switches and how long its ε ramp is, in optimizer steps.

    Attributes:
        total_steps: all optimizer steps of the run.
        switch_step: ``T_w`` (DεpS's ``teacher_warmup``): the first step at which the SubNets train at full
            weight; the ε ramp ends here.
        ramp_steps: ``S`` (DεpS's ``smallnet_warmup``), the length of the ε ramp ``[T_w − S, T_w)`` (0: no
            ramp, SubNets join at full weight at ``T_w`` — the "without ε-shrinking" ablation).
    """

    total_steps: int
    switch_step: int
    ramp_steps: int

    @property
    def ramp_start(self) -> int:
        """``T_w − S``: the first step with SubNets (steps before it train the full model alone)."""
        return self.switch_step - self.ramp_steps

    @property
    def full_step(self) -> int:
        """First step at which the SubNets train at full weight (``T_w``, the switch step)."""
        return self.switch_step


def delayed_shrinking_schedule(
    total_steps: int,
    steps_per_epoch: float,
    warmup_fraction: float = 0.5,
    ramp_epochs: float | None = None,
    ramp_fraction: float | None = None,
) -> DelayedShrinkingSchedule:
    """Resolve DεS's switch ``T_w`` and ε-ramp length ``S`` into steps; the ramp ends at ``T_w``.

    ``T_w = round(warmup_fraction × total_steps)`` (:func:`warmup_switch_step`). The ramp is given either
    in epochs (``ramp_epochs``) or as a fraction of all steps (``ramp_fraction``), not both; it runs over
    ``[T_w − S, T_w)``, as DεpS's ``adjust_beta_value``. With neither, ``S`` is DεpS's default of 5 epochs
    (``smallnet_warmup``); in a run whose ``T_w`` is shorter than 5 epochs (DεpS never ran one) the default
    ramp is cut to ``T_w`` — it starts at step 0 and no step trains the full model alone. An explicit ramp
    longer than ``T_w`` is an error.

    Example::

        >>> s = delayed_shrinking_schedule(total_steps=2700, steps_per_epoch=10, warmup_fraction=0.5)
        >>> (s.ramp_start, s.switch_step, s.ramp_steps)   # 270 epochs × 10 steps: ramp over epochs 130–135
        (1300, 1350, 50)
    """
    switch = warmup_switch_step(total_steps, warmup_fraction)
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be > 0, got {steps_per_epoch}")
    if ramp_epochs is not None and ramp_fraction is not None:
        raise ValueError(
            f"give the ε ramp as ramp_epochs or as ramp_fraction, not both (got ramp_epochs={ramp_epochs}, "
            f"ramp_fraction={ramp_fraction})"
        )
    if ramp_fraction is not None:
        ramp = round(_check_fraction("ramp_fraction", ramp_fraction) * total_steps)
        what = f"ramp_fraction={ramp_fraction}"
    elif ramp_epochs is not None:
        if isinstance(ramp_epochs, bool) or not math.isfinite(ramp_epochs) or ramp_epochs < 0:
            raise ValueError(f"ramp_epochs must be a number >= 0, got {ramp_epochs!r}")
        ramp = round(ramp_epochs * steps_per_epoch)
        what = f"ramp_epochs={ramp_epochs}"
    else:  # DεpS's S = 5 epochs; a run too short for it ramps over its whole warm-up (see the docstring)
        return DelayedShrinkingSchedule(total_steps=total_steps, switch_step=switch,
                                        ramp_steps=min(round(DEFAULT_RAMP_EPOCHS * steps_per_epoch), switch))
    if ramp > switch:
        raise ValueError(
            f"the ε ramp ({what} = {ramp} steps) does not fit before the switch at step {switch} "
            f"(warmup_fraction={warmup_fraction} of {total_steps} steps; the ramp ends at the switch): allowed at "
            f"most {switch} steps (ramp_epochs <= {switch / steps_per_epoch:.4g} or ramp_fraction <= "
            f"{switch / total_steps:.4g}), or a larger warmup_fraction"
        )
    return DelayedShrinkingSchedule(total_steps=total_steps, switch_step=switch, ramp_steps=ramp)


def epsilon_ramp(step: int, switch_step: int, ramp_steps: int) -> float:
    """Progress of the ε ramp at ``step``, for a ramp of ``ramp_steps`` ending at ``switch_step`` (``T_w``).

    0 before ``T_w − S``; ``(step − (T_w − S) + 1) / S`` over the ramp ``[T_w − S, T_w)`` — ``1/S`` at its
    first step, 1 at its last (DεpS: ``T_cur = epoch·nBatch + batch + 1`` over ``T_total = S·nBatch``);
    1 from ``T_w`` on (``ramp_steps = 0``: 0 then 1 at ``T_w``).

    Example::

        >>> [epsilon_ramp(t, switch_step=14, ramp_steps=4) for t in (9, 10, 11, 12, 13, 14)]
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    if ramp_steps < 0:
        raise ValueError(f"ramp_steps must be >= 0, got {ramp_steps}")
    if step >= switch_step:
        return 1.0
    start = switch_step - ramp_steps
    if step < start:
        return 0.0
    return (step - start + 1) / ramp_steps


def epsilon_beta(
    step: int,
    switch_step: int,
    ramp_steps: int,
    multiplier: float = 1.0,
    lr: float | None = None,
    lr_at_full: float | None = None,
) -> float:
    """DεpS's per-SubNet gradient weight β at ``step`` (``adjust_beta_value``), the ramp ending at ``T_w``.

    Before the ramp (``step < T_w − S``) β = 0; from ``T_w`` on β = ``multiplier``. Over the ramp, without
    learning rates β rises linearly: ``multiplier × epsilon_ramp(...)``, so a SubNet's effective learning
    rate β·η(t) rises from ~0 towards the full model's. With ``lr`` (= η(t)) and ``lr_at_full``
    (= η(T_w), DεpS's ``lr_dict[teacher_warmup]``), β is the paper code's
    ``progress × multiplier × η(T_w) / η(t)``: the SubNets' effective learning rate rises *linearly in
    steps* to ``multiplier × η(T_w)``, reached at the last ramp step ``T_w − 1``.

    Example::

        >>> epsilon_beta(11, switch_step=14, ramp_steps=4)
        0.5
        >>> epsilon_beta(11, switch_step=14, ramp_steps=4, lr=0.2, lr_at_full=0.1)   # 0.5 × 0.1 / 0.2
        0.25
    """
    progress = epsilon_ramp(step, switch_step, ramp_steps)
    if step >= switch_step:
        return multiplier
    if progress == 0.0 or lr is None or lr_at_full is None or lr <= 0:
        return multiplier * progress
    return multiplier * progress * lr_at_full / lr


def progressive_shrinking_phases(
    total_steps: int, weights: Sequence[float] = OFA_PHASE_EPOCHS
) -> list[tuple[int, int]]:
    """``[start, end)`` step ranges of consecutive phases with lengths proportional to ``weights``.

    Boundaries are ``round(total_steps × cumulative weight / sum)``, so they never drift and the last
    phase ends at ``total_steps``; a phase may be empty in very short runs.

    Example::

        >>> progressive_shrinking_phases(605)      # OFA's epochs: full, kernel, depth 2a/2b, expand 3a/3b
        [(0, 180), (180, 305), (305, 330), (330, 455), (455, 480), (480, 605)]
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    ws = [float(w) for w in weights]
    if not ws or any(not math.isfinite(w) or w < 0 for w in ws) or sum(ws) <= 0:
        raise ValueError(f"phase weights must be non-negative numbers with a positive sum, got {list(weights)}")
    total = sum(ws)
    bounds, cumulative = [0], 0.0
    for w in ws:
        cumulative += w
        bounds.append(round(total_steps * cumulative / total))
    bounds[-1] = total_steps
    return [(bounds[i], bounds[i + 1]) for i in range(len(ws))]


def progressive_shrinking_lr(
    step: int,
    phases: Sequence[tuple[int, int]],
    base_lr: float,
    phase_lr: Sequence[float] = OFA_PHASE_LR,
    warmup_steps: Sequence[int] | None = None,
    min_lr: float = 0.0,
) -> float:
    """OFA's learning rate at ``step``: a cosine schedule restarted in every phase, at the phase's own rate.

    Phase ``i`` (``phases[i] = [start, end)``) starts at ``base_lr × phase_lr[i] / phase_lr[0]`` and
    anneals (:func:`cosine_lr`, after ``warmup_steps[i]`` linear warm-up steps) to
    ``min_lr × phase_lr[i] / phase_lr[0]`` at its end — as OFA, which trains every phase as a separate
    run (``train_ofa_net.py --task kernel|depth|expand --phase 1|2``) with its own epochs, initial
    learning rate and warm-up. Empty phases are skipped; steps past the last phase keep its final rate.

    Example::

        >>> phases = progressive_shrinking_phases(605)    # OFA's epochs as steps
        >>> [round(progressive_shrinking_lr(t, phases, 2.6), 4) for t in (0, 180, 305, 330)]
        [2.6, 0.96, 0.08, 0.24]
    """
    if not phases:
        raise ValueError("progressive_shrinking_lr: needs at least one phase, got none")
    if len(phase_lr) != len(phases):
        raise ValueError(f"phase_lr must have one rate per phase ({len(phases)}), got {list(phase_lr)}")
    if not phase_lr[0] > 0:
        raise ValueError(f"phase_lr[0] (the first phase's rate) must be > 0, got {phase_lr[0]!r}")
    warm = [0] * len(phases) if warmup_steps is None else list(warmup_steps)
    if len(warm) != len(phases):
        raise ValueError(f"warmup_steps must have one entry per phase ({len(phases)}), got {warm}")
    live = [i for i, (start, end) in enumerate(phases) if end > start] or [0]
    i = live[-1]
    for j in live:
        if step < phases[j][1]:
            i = j
            break
    start, end = phases[i]
    scale = phase_lr[i] / phase_lr[0]
    return cosine_lr(step - start, end - start, base_lr * scale, min_lr * scale, warm[i])


def bignas_lr(
    step: int,
    steps_per_epoch: float,
    base_lr: float,
    decay: float = BIGNAS_LR_DECAY,
    decay_epochs: float = BIGNAS_LR_DECAY_EPOCHS,
    final_fraction: float = BIGNAS_FINAL_LR_FRACTION,
    warmup_steps: int = 0,
) -> float:
    """BigNAS's learning rate: exponential decay with a constant ending.

    After a linear warm-up (``base_lr × (step + 1) / warmup_steps``) the rate decays by ``decay`` every
    ``decay_epochs`` epochs (staircase, as EfficientNet's ``exponential_decay``; one period is
    ``round(decay_epochs × steps_per_epoch)`` steps) until it reaches ``final_fraction × base_lr``, where it
    stays: ``max(base_lr × decay^⌊(step − warmup) / period⌋, final_fraction × base_lr)``.

    Example::

        >>> [round(bignas_lr(t, 10, 0.1), 5) for t in (0, 23, 24, 48)]    # 0.97 every 24 steps
        [0.1, 0.1, 0.097, 0.09409]
        >>> round(bignas_lr(10_000, 10, 0.1), 6)                            # the constant ending: 5%
        0.005
    """
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay!r}")
    if not 0 <= final_fraction <= 1:
        raise ValueError(f"final_fraction must be in [0, 1], got {final_fraction!r}")
    if not (decay_epochs > 0 and steps_per_epoch > 0):
        raise ValueError(f"decay_epochs and steps_per_epoch must be > 0, got {decay_epochs!r}, {steps_per_epoch!r}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    period = max(1, round(decay_epochs * steps_per_epoch))
    return max(base_lr * decay ** ((step - warmup_steps) // period), final_fraction * base_lr)


def cosine_lr(step: int, total_steps: int, base_lr: float, min_lr: float = 0.0, warmup_steps: int = 0) -> float:
    """Cosine learning rate from ``base_lr`` to ``min_lr`` over ``total_steps``, after a linear warm-up.

    During warm-up: ``base_lr × (step + 1) / warmup_steps``. After it, with
    ``p = (step − warmup) / (total − warmup)``: ``min_lr + (base_lr − min_lr) × (1 + cos(π p)) / 2``.

    Example::

        >>> cosine_lr(0, 100, 0.1), cosine_lr(50, 100, 0.1), cosine_lr(100, 100, 0.1)
        (0.1, 0.05, 0.0)
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    p = min(max((step - warmup_steps) / span, 0.0), 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))

"""Pure schedule functions of SuperNet training: DεS warm-up switch and ε ramp, OFA phases, cosine lr.

Everything here is a function of integers and floats — no trainer, no model — so the schedules can be
unit-tested on hand-computed values and reused by any training loop. Steps are optimizer steps
(one per batch: all SubNets of a step accumulate into one update).

* **Delayed ε-Shrinking** (DεpS, Annavajjala et al., ECCV 2024): the full model trains alone for the
  first ``warmup_fraction`` of the steps (FM-warmup); at the *switch step* the SubNets join, and their
  gradient weight β ramps up over ``ramp_steps`` (ε-shrinking) — :func:`delayed_shrinking_schedule`,
  :func:`epsilon_beta`.
* **Progressive shrinking** (OFA, Cai et al., ICLR 2020): consecutive phases full → kernel → depth →
  expand whose lengths are proportional to the paper's epochs — :func:`progressive_shrinking_phases`.
* :func:`cosine_lr` — the cosine learning-rate schedule (optional linear warm-up, floor ``min_lr``)
  used by :class:`~ws_train.SuperNetModule`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_RAMP_EPOCHS",
    "DEFAULT_RAMP_MAX_FRACTION",
    "OFA_PHASE_EPOCHS",
    "DelayedShrinkingSchedule",
    "cosine_lr",
    "delayed_shrinking_schedule",
    "epsilon_beta",
    "epsilon_ramp",
    "progressive_shrinking_phases",
    "warmup_switch_epoch",
    "warmup_switch_step",
]

#: DεpS's ``smallnet_warmup``: the ε ramp lasts 5 epochs.
DEFAULT_RAMP_EPOCHS = 5.0
#: For short runs the default ramp is capped at this fraction of all steps.
DEFAULT_RAMP_MAX_FRACTION = 0.1
#: OFA progressive-shrinking epochs per phase (paper App. B): full 180, kernel 125, depth 25 + 125,
#: expand 25 + 125 (605 in all).
OFA_PHASE_EPOCHS = (180.0, 125.0, 25.0, 125.0, 25.0, 125.0)


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
    """First step at which the SubNets join DεS training: ``round(warmup_fraction × total_steps)``.

    Steps ``[0, switch)`` train the full model alone (FM-warmup).

    Example::

        >>> warmup_switch_step(1000, 0.5)
        500
    """
    _check_fraction("warmup_fraction", warmup_fraction, high_open=True)
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    return round(warmup_fraction * total_steps)


def warmup_switch_epoch(max_epochs: float, warmup_fraction: float) -> float:
    """The epoch (possibly fractional) at which the SubNets join: ``warmup_fraction × max_epochs``.

    Example::

        >>> warmup_switch_epoch(270, 0.5)   # DεpS's ImageNet recipe switches around epoch 135–145
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
        switch_step: first step with SubNets (steps before it train the full model only).
        ramp_steps: length of the ε ramp; β reaches its final value at ``switch_step + ramp_steps - 1``
            (0: no ramp, SubNets join at full weight — the "without ε-shrinking" ablation).
    """

    total_steps: int
    switch_step: int
    ramp_steps: int

    @property
    def full_step(self) -> int:
        """First step at which the SubNets train at full weight."""
        return self.switch_step + max(self.ramp_steps - 1, 0)


def delayed_shrinking_schedule(
    total_steps: int,
    steps_per_epoch: float,
    warmup_fraction: float = 0.5,
    ramp_epochs: float | None = None,
    ramp_fraction: float | None = None,
) -> DelayedShrinkingSchedule:
    """Resolve DεS's warm-up fraction and ε-ramp length into steps.

    The ramp is given either in epochs (``ramp_epochs``) or as a fraction of all steps
    (``ramp_fraction``), not both. With neither, it is DεpS's 5 epochs, capped at 10% of the run so
    that short runs still ramp (``min(5 epochs, 0.1 × total_steps)``). An explicit ramp that does not
    fit between the switch and the last step is an error.

    Example::

        >>> s = delayed_shrinking_schedule(total_steps=2700, steps_per_epoch=10, warmup_fraction=0.5)
        >>> (s.switch_step, s.ramp_steps)        # 270 epochs × 10 steps: switch at epoch 135, 5-epoch ramp
        (1350, 50)
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
    else:
        ramp = round(min(DEFAULT_RAMP_EPOCHS * steps_per_epoch, DEFAULT_RAMP_MAX_FRACTION * total_steps))
        what = "the default ramp"
    remaining = total_steps - switch
    if ramp > remaining:
        raise ValueError(
            f"the ε ramp ({what} = {ramp} steps) does not fit after the switch at step {switch} "
            f"(warmup_fraction={warmup_fraction}) of {total_steps} steps: allowed at most {remaining} steps "
            f"(ramp_epochs <= {remaining / steps_per_epoch:.4g} or ramp_fraction <= {remaining / total_steps:.4g})"
        )
    return DelayedShrinkingSchedule(total_steps=total_steps, switch_step=switch, ramp_steps=ramp)


def epsilon_ramp(step: int, switch_step: int, ramp_steps: int) -> float:
    """Progress of the ε ramp at ``step``: 0 before the switch, then ``(step − switch + 1) / ramp_steps``
    up to 1 (``ramp_steps = 0``: 1 from the switch on).

    Example::

        >>> [epsilon_ramp(t, switch_step=10, ramp_steps=4) for t in (9, 10, 11, 12, 13, 14)]
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    if ramp_steps < 0:
        raise ValueError(f"ramp_steps must be >= 0, got {ramp_steps}")
    if step < switch_step:
        return 0.0
    if ramp_steps == 0:
        return 1.0
    return min(1.0, (step - switch_step + 1) / ramp_steps)


def epsilon_beta(
    step: int,
    switch_step: int,
    ramp_steps: int,
    multiplier: float = 1.0,
    lr: float | None = None,
    lr_at_full: float | None = None,
) -> float:
    """DεpS's per-SubNet gradient weight β at ``step`` (``adjust_beta_value``).

    Without learning rates, β rises linearly: ``multiplier × epsilon_ramp(...)``, so a SubNet's
    effective learning rate β·η(t) rises from 0 to the full model's. With ``lr`` (= η(t)) and
    ``lr_at_full`` (= η at the step the ramp ends), β is the paper code's form
    ``progress × η(full) / η(t)`` during the ramp: the SubNets' effective learning rate rises
    *linearly in steps* to the value the full model has when the ramp ends. After the ramp, β =
    ``multiplier``.

    Example::

        >>> epsilon_beta(11, switch_step=10, ramp_steps=4)
        0.5
        >>> epsilon_beta(11, switch_step=10, ramp_steps=4, lr=0.2, lr_at_full=0.1)   # 0.5 × 0.1 / 0.2
        0.25
    """
    progress = epsilon_ramp(step, switch_step, ramp_steps)
    if progress in (0.0, 1.0) or lr is None or lr_at_full is None or lr <= 0:
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

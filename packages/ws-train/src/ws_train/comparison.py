"""The SubNet-step arithmetic of comparing shrinking policies at equal compute.

Pure functions of integers, used by ``benchmarks/train_des_vs_ps.py`` and tested on hand-computed values.
Training cost is counted in *SubNet-steps* — one SubNet's forward and backward on one batch, the
``subnet_passes`` of a :class:`~ws_train.ShrinkingPolicy`:

* :func:`des_subnet_steps`, :func:`progressive_shrinking_subnet_steps`, :func:`sandwich_subnet_steps` — the
  SubNet-steps of a run of a given length under each policy's schedule;
* :func:`steps_for_subnet_budget` — the run length at which a policy spends a given number of SubNet-steps
  (e.g. the sandwich's, for an equal-compute comparison).

The summaries over seeds (mean ± standard error, paired differences, the verdict) are ws-core's
(:mod:`ws_core.stats`), shared by every package's benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .schedules import OFA_PHASE_EPOCHS, delayed_shrinking_schedule, progressive_shrinking_phases

__all__ = [
    "des_subnet_steps",
    "progressive_shrinking_subnet_steps",
    "sandwich_subnet_steps",
    "steps_for_subnet_budget",
]


# Training cost in SubNet-steps -----------------------------------------------------------------------
def sandwich_subnet_steps(total_steps: int, num_random: int = 2) -> int:
    """SubNet-steps of the sandwich rule (BigNAS): max + min + ``num_random`` random SubNets every step.

    Example::

        >>> sandwich_subnet_steps(100)
        400
    """
    return total_steps * (2 + num_random)


def des_subnet_steps(total_steps: int, steps_per_epoch: float, warmup_fraction: float = 0.5,
                     ramp_epochs: float | None = None, ramp_fraction: float | None = None,
                     num_random: int = 2) -> int:
    """SubNet-steps of Delayed ε-Shrinking: the max net alone until the ε ramp starts (``T_w − S``), then
    max + min + ``num_random`` random SubNets every step (the ramp's SubNets train with β > 0 and count).

    Example::

        >>> des_subnet_steps(100, 50, warmup_fraction=0.4, ramp_fraction=0.1)   # 30 × 1 + 70 × 4
        310
    """
    s = delayed_shrinking_schedule(total_steps, steps_per_epoch, warmup_fraction, ramp_epochs, ramp_fraction)
    return s.ramp_start + (total_steps - s.ramp_start) * (2 + num_random)


def progressive_shrinking_subnet_steps(total_steps: int, phase_weights: Sequence[float] = OFA_PHASE_EPOCHS,
                                       subnets_per_step: Sequence[int] = (1, 1, 2, 2, 4, 4)) -> int:
    """SubNet-steps of OFA progressive shrinking: each phase's steps × its SubNets per step.

    Assumes every phase adds an elastic choice (true of OFA MobileNetV3 spaces with elastic kernel,
    depth and expand); ``ProgressiveShrinking`` merges a phase that adds nothing into the previous one.

    Example::

        >>> progressive_shrinking_subnet_steps(605)     # 180 + 125 + 2 × (25 + 125) + 4 × (25 + 125)
        1205
    """
    if len(subnets_per_step) != len(phase_weights):
        raise ValueError(f"one SubNet count per phase ({len(phase_weights)}), got {list(subnets_per_step)}")
    bounds = progressive_shrinking_phases(total_steps, phase_weights)
    return sum((end - start) * count for (start, end), count in zip(bounds, subnets_per_step))


def steps_for_subnet_budget(subnet_steps: Callable[[int], int], budget: int, max_steps: int = 10_000_000) -> int:
    """The run length in optimizer steps whose SubNet-steps come closest to ``budget``.

    ``subnet_steps(total_steps)`` must not decrease with ``total_steps``; ties go to the shorter run.

    Example::

        >>> steps_for_subnet_budget(lambda t: 2 * t, 401)     # 200 -> 400 and 201 -> 402: 200 is closer
        200
    """
    if budget < 1:
        raise ValueError(f"budget must be >= 1 SubNet-step, got {budget}")
    lo, hi = 1, 1
    while subnet_steps(hi) < budget:  # the first run length reaching the budget: in [lo, hi]
        lo, hi = hi, hi * 2
        if hi > max_steps:
            raise ValueError(f"no run of <= {max_steps} steps spends {budget} SubNet-steps")
    while lo < hi:
        mid = (lo + hi) // 2
        if subnet_steps(mid) >= budget:
            hi = mid
        else:
            lo = mid + 1
    if hi > 1 and budget - subnet_steps(hi - 1) <= subnet_steps(hi) - budget:
        return hi - 1
    return hi

"""Which SubNets a training step trains: step-seeded sampling, sandwich sets, phase-restricted spaces.

SubNets are drawn with ws-core's :meth:`SearchSpace.sample` from a :class:`torch.Generator` seeded
by ``(seed, global step, index)`` (:func:`subnet_generator`, OFA's ``random.seed(step + index)``), so
every DDP rank and every resumed run trains the same SubNets at the same step — no communication.

* :class:`SubNetTask` — one SubNet of a step: its config, its gradient weight β and its loss.
* :func:`sandwich_tasks` — the sandwich rule (US-Nets, BigNAS): max, min and ``n`` random SubNets.
* :func:`restrict_space` — the same space with fewer choices (OFA's phases: ``D ∈ {4, 3}``, …).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ws_core import SearchSpace, SubNetConfig
from ws_core.space import Dimension

__all__ = [
    "LOSSES",
    "ROLES",
    "SubNetTask",
    "restrict_space",
    "sandwich_tasks",
    "subnet_generator",
    "subnet_seed",
]

#: ``"ce"``: label-smoothed cross-entropy on the labels; ``"inplace_kd"``: distillation from the step's
#: max-net output (detached); ``"teacher_kd"``: cross-entropy plus distillation from a frozen teacher.
LOSSES = ("ce", "inplace_kd", "teacher_kd")
ROLES = ("max", "min", "random")

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def subnet_seed(seed: int, step: int, index: int) -> int:
    """A 63-bit seed for SubNet ``index`` of optimizer step ``step`` (splitmix64 of the three numbers).

    A pure function: every process computes the same value, different ``(step, index)`` pairs give
    unrelated seeds.
    """
    if step < 0 or index < 0:
        raise ValueError(f"step and index must be >= 0, got step={step}, index={index}")
    h = _splitmix64(int(seed) & _MASK64)
    h = _splitmix64(h ^ int(step))
    h = _splitmix64(h ^ int(index))
    return h >> 1


def subnet_generator(seed: int, step: int, index: int) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded with :func:`subnet_seed` (pass it to ``space.sample``)."""
    return torch.Generator().manual_seed(subnet_seed(seed, step, index))


@dataclass(frozen=True)
class SubNetTask:
    """One SubNet trained in one step.

    Attributes:
        config: the SubNet.
        weight: its gradient weight β (its loss is multiplied by it before ``backward``).
        loss: one of :data:`LOSSES`.
        role: ``"max"``, ``"min"`` or ``"random"`` (for logs and records).
    """

    config: SubNetConfig
    weight: float = 1.0
    loss: Literal["ce", "inplace_kd", "teacher_kd"] = "ce"
    role: Literal["max", "min", "random"] = "random"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"SubNetTask.loss must be one of {list(LOSSES)}, got {self.loss!r}")
        if self.role not in ROLES:
            raise ValueError(f"SubNetTask.role must be one of {list(ROLES)}, got {self.role!r}")
        if not self.weight >= 0:
            raise ValueError(f"SubNetTask.weight must be >= 0, got {self.weight!r}")


def sandwich_tasks(
    space: SearchSpace,
    step: int,
    seed: int,
    num_random: int = 2,
    weight: float = 1.0,
    max_weight: float = 1.0,
) -> list[SubNetTask]:
    """The sandwich rule with inplace distillation: max (labels), min and ``num_random`` random SubNets
    (distilled from the max net's soft targets), the random ones seeded by ``(seed, step, index)``.

    ``weight`` is the β of the non-max SubNets; a zero weight drops them (nothing to train).
    """
    tasks = [SubNetTask(space.max(), max_weight, "ce", "max")]
    if weight <= 0:
        return tasks
    tasks.append(SubNetTask(space.min(), weight, "inplace_kd", "min"))
    for i in range(num_random):
        cfg = space.sample(subnet_generator(seed, step, i + 2))
        tasks.append(SubNetTask(cfg, weight, "inplace_kd", "random"))
    return tasks


def restrict_space(space: SearchSpace, allowed: Mapping[str, Sequence]) -> SearchSpace:
    """The same space with the choices of some dimensions cut down to ``allowed[name]``.

    Sampling the restricted space with ws-core's ``sample`` draws uniformly among the allowed
    choices; its configs are valid configs of ``space``.

    Example::

        >>> small = restrict_space(net.space, {"depth": (3, 4), "expand": (6,)})   # doctest: +SKIP
    """
    dims = []
    for d in space.dimensions:
        if d.name in allowed:
            choices = tuple(allowed[d.name])
            bad = [c for c in choices if c not in d.choices]
            if bad or not choices:
                raise ValueError(f"restrict_space: dimension {d.name!r} allows {list(d.choices)}, got {list(choices)}")
            dims.append(Dimension(d.name, choices, d.level))
        else:
            dims.append(d)
    unknown = sorted(set(allowed) - set(space.names))
    if unknown:
        raise ValueError(f"restrict_space: unknown dimension(s) {unknown}; allowed {list(space.names)}")
    return SearchSpace(dims, space.stage_blocks, space.base_depth)

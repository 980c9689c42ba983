"""Overlap-aware aggregation of SubNet updates and the MaxNet weighting of SuperFedNAS.

SuperFedNAS (Khare et al., ECCV 2024, ``Server/ServerTrainer/superfednas_trainer.py``) sends every
client a different SubNet of one SuperNet. A SubNet reads a region of each SuperNet tensor (leading
channels, the centre of a kernel; see :meth:`ws_core.SuperNet.weight_slices`), and the regions of
different SubNets overlap arbitrarily. Aggregation therefore works per weight *element*:

    W_new[e] = Σ_k w_k · W_k[e] / Σ_k w_k        over the clients k whose SubNet contains e,

and an element no client trained keeps its value. The per-client scalar ``w_k`` is the **MaxNet**
weight: the client(s) that trained the largest SubNet share ``β_t``, every other client gets an equal
share of ``1 − β_t``, and ``β_t`` decays from ``β₀`` to ``β_final`` on a cosine schedule
(``maxnet_cos_all_subnet``); optionally ``w_k`` is also multiplied by the client's share of examples.

Everything here is a pure function on NumPy arrays, so it is tested on hand-computed numbers.

Example::

    >>> import numpy as np
    >>> old = {"w": np.zeros(4, dtype=np.float32)}
    >>> a = SubNetUpdate({"w": np.array([1.0, 1.0])}, {"w": (slice(0, 2),)}, weight=1.0)
    >>> b = SubNetUpdate({"w": np.array([3.0, 3.0, 3.0])}, {"w": (slice(0, 3),)}, weight=1.0)
    >>> aggregate_overlapping(old, [a, b])["w"]
    array([2., 2., 3., 0.], dtype=float32)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SCHEDULES",
    "SubNetUpdate",
    "aggregate_overlapping",
    "maxnet_beta",
    "maxnet_weights",
    "round_lr",
]

Slices = tuple[slice, ...]
SCHEDULES = ("cosine", "linear", "constant")
"""The annealing shapes of :func:`maxnet_beta` and :func:`round_lr`."""


@dataclass(frozen=True)
class SubNetUpdate:
    """One client's trained SubNet: its arrays, where they sit in the SuperNet, and its weight.

    Attributes:
        arrays: ``{state-dict key: trained region}`` for every tensor the SubNet reads.
        slices: ``{state-dict key: region}`` as given by :meth:`ws_core.SuperNet.weight_slices`;
            ``arrays[k].shape`` equals the shape of ``global[k][slices[k]]``.
        weight: the client's aggregation weight ``w_k`` (>= 0).
    """

    arrays: Mapping[str, np.ndarray]
    slices: Mapping[str, Slices]
    weight: float = 1.0


def _region_shape(shape: tuple[int, ...], slices: Slices) -> tuple[int, ...]:
    if len(slices) != len(shape):
        raise ValueError(f"region has {len(slices)} slices for a tensor of rank {len(shape)}")
    return tuple(len(range(*s.indices(n))) for s, n in zip(slices, shape))


def aggregate_overlapping(
    global_arrays: Mapping[str, np.ndarray], updates: Sequence[SubNetUpdate]
) -> dict[str, np.ndarray]:
    """Average every element over exactly the updates whose SubNet contains it (weighted).

    Args:
        global_arrays: the current SuperNet tensors ``{key: array}``; not modified.
        updates: the clients' trained SubNets. An update may omit keys (blocks its SubNet skips).

    Returns:
        New arrays for every key of ``global_arrays`` (same dtypes and shapes). Elements covered by
        no update, or only by updates of weight 0, keep their old value. Sums are taken in float64;
        integer tensors (e.g. BN's ``num_batches_tracked``) are rounded back.

    Raises:
        ValueError: if an update names an unknown key, its arrays and slices disagree, a shape does
            not match its region, or a weight is negative or not finite.
    """
    for i, update in enumerate(updates):
        w = float(update.weight)
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"update {i}: weight must be a finite number >= 0, got {update.weight!r}")
        if set(update.arrays) != set(update.slices):
            diff = sorted(set(update.arrays) ^ set(update.slices))
            raise ValueError(f"update {i}: arrays and slices must have the same keys; differing: {diff[:5]}")
        for key, arr in update.arrays.items():
            if key not in global_arrays:
                raise ValueError(f"update {i}: unknown key {key!r} (not a SuperNet tensor)")
            region = _region_shape(np.shape(global_arrays[key]), update.slices[key])
            if tuple(np.shape(arr)) != region:
                raise ValueError(
                    f"update {i}: {key!r} has shape {tuple(np.shape(arr))}, its region has shape {region}"
                )

    out: dict[str, np.ndarray] = {}
    for key, old in global_arrays.items():
        old = np.asarray(old)
        contributions = [(u.slices[key], u.arrays[key], float(u.weight)) for u in updates if key in u.arrays]
        if not contributions:
            out[key] = old.copy()
            continue
        total = np.zeros(old.shape, dtype=np.float64)
        count = np.zeros(old.shape, dtype=np.float64)
        for region, arr, w in contributions:
            total[region] += w * np.asarray(arr, dtype=np.float64)
            count[region] += w
        trained = count > 0
        new = old.astype(np.float64, copy=True)
        new[trained] = total[trained] / count[trained]
        if np.issubdtype(old.dtype, np.integer) or old.dtype == np.bool_:
            new = np.rint(new)
        out[key] = np.asarray(new).astype(old.dtype, copy=False)  # 0-d results of ufuncs are scalars
    return out


def maxnet_beta(
    server_round: int,
    decay_rounds: int,
    beta_initial: float = 0.9,
    beta_final: float = 0.125,
    schedule: str = "cosine",
) -> float:
    """The MaxNet share ``β_t`` of round ``server_round`` (Flower rounds start at 1; round 1 gets ``β₀``).

    With ``t = server_round − 1``, ``T = decay_rounds`` and ``a = β_final / β₀``:

    * cosine (``maxnet_cos_all_subnet``): ``β_t = β₀ · [(1 − a) · ½(1 + cos(π · min(t, T) / T)) + a]``;
    * linear (``maxnet_linear_all_subnet``): ``β_t = β₀ · [(1 − a) · (1 − min(t, T) / T) + a]``;
    * constant: ``β_t = β₀``.

    SuperFedNAS uses β₀ = 0.9, β_final = 1/K for K clients per round (the uniform share) and
    T = 0.8 × the number of rounds (1200 of 1500).

    Example::

        >>> maxnet_beta(1, 10, 0.9, 0.1), maxnet_beta(11, 10, 0.9, 0.1)
        (0.9, 0.1)
        >>> round(maxnet_beta(6, 10, 0.9, 0.1), 6)   # half-way: the mean of 0.9 and 0.1
        0.5
    """
    if isinstance(server_round, bool) or not isinstance(server_round, int) or server_round < 1:
        raise ValueError(f"server_round must be an int >= 1, got {server_round!r}")
    if isinstance(decay_rounds, bool) or not isinstance(decay_rounds, int) or decay_rounds < 1:
        raise ValueError(f"decay_rounds must be an int >= 1, got {decay_rounds!r}")
    if not 0.0 < beta_initial <= 1.0:
        raise ValueError(f"beta_initial must be in (0, 1], got {beta_initial!r}")
    if not 0.0 <= beta_final <= 1.0:
        raise ValueError(f"beta_final must be in [0, 1], got {beta_final!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    return _anneal(beta_initial, beta_final, min(server_round - 1, decay_rounds) / decay_rounds, schedule)


def _anneal(initial: float, final: float, progress: float, schedule: str) -> float:
    """``initial`` → ``final`` at ``progress`` ∈ [0, 1]: cosine, linear or constant (stays ``initial``)."""
    if schedule == "constant":
        return float(initial)
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return float(final + (initial - final) * decay)


def round_lr(server_round: int, num_rounds: int, lr: float, lr_final: float = 0.0, schedule: str = "cosine") -> float:
    """The clients' learning rate in round ``server_round`` of ``num_rounds`` (Flower rounds start at 1).

    Annealed over the rounds as per-epoch schedules anneal over epochs (``CosineAnnealingLR`` with
    ``T_max = num_rounds``): with ``t = server_round − 1`` and ``T = num_rounds``,

    * cosine: ``lr_t = lr_final + (lr − lr_final) · ½(1 + cos(π · t / T))``;
    * linear: ``lr_t = lr_final + (lr − lr_final) · (1 − t / T)``;
    * constant: ``lr_t = lr``.

    Round 1 trains at ``lr``; the last round at slightly above ``lr_final`` (it still trains).
    Rounds past ``num_rounds`` stay at ``lr_final``. The server sends ``lr_t`` in each round's config.

    Example::

        >>> round_lr(1, 10, 0.1), round_lr(6, 10, 0.1), round_lr(11, 10, 0.1, 0.01)
        (0.1, 0.05, 0.01)
    """
    if isinstance(server_round, bool) or not isinstance(server_round, int) or server_round < 1:
        raise ValueError(f"server_round must be an int >= 1, got {server_round!r}")
    if isinstance(num_rounds, bool) or not isinstance(num_rounds, int) or num_rounds < 1:
        raise ValueError(f"num_rounds must be an int >= 1, got {num_rounds!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    if not (isinstance(lr_final, (int, float)) and math.isfinite(lr_final) and 0 <= lr_final <= lr):
        raise ValueError(f"lr_final must be a number in [0, lr={lr}], got {lr_final!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    return _anneal(lr, lr_final, min(server_round - 1, num_rounds) / num_rounds, schedule)


def maxnet_weights(
    is_maxnet: Sequence[bool],
    beta: float,
    num_examples: Sequence[float] | None = None,
) -> list[float]:
    """Per-client aggregation weights of SuperFedNAS's MaxNet rule.

    The ``m`` clients that trained the largest SubNet get ``β / m`` each, the other ``K − m`` clients
    ``(1 − β) / (K − m)`` each. If every client (or none) trained the largest SubNet, all get ``1 / K``.
    With ``num_examples``, each weight is further multiplied by ``n_k / Σ n`` (``--weight_dataset``).

    Example::

        >>> maxnet_weights([True, False, False], beta=0.5)
        [0.5, 0.25, 0.25]
        >>> maxnet_weights([False, False], beta=0.7, num_examples=[30, 10])
        [0.375, 0.125]
    """
    k = len(is_maxnet)
    if k == 0:
        return []
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta!r}")
    m = sum(bool(x) for x in is_maxnet)
    uniform = m in (0, k)
    weights = [1.0 / k if uniform else beta / m if x else (1.0 - beta) / (k - m) for x in is_maxnet]
    if num_examples is not None:
        if len(num_examples) != k:
            raise ValueError(f"num_examples has {len(num_examples)} entries for {k} clients")
        n = [float(v) for v in num_examples]
        if any(not math.isfinite(v) or v < 0 for v in n) or sum(n) <= 0:
            raise ValueError(f"num_examples must be finite, >= 0 and not all zero, got {list(num_examples)}")
        total = sum(n)
        weights = [w * v / total for w, v in zip(weights, n)]
    return weights

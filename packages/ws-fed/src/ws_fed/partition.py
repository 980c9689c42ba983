"""Splitting a data set across federated clients: IID and Dirichlet non-IID over labels, seeded.

* :func:`iid_partition` — a seeded random permutation cut into near-equal parts.
* :func:`dirichlet_partition` — label skew as in SuperFedNAS/FedML (``partition_method=hetero``):
  for every class, the shares of the clients are drawn from ``Dir(α)``; clients already holding more
  than an equal share get no more (FedML's balancing step); drawing repeats until every client holds
  at least ``min_partition_size`` items. ``α → ∞`` approaches IID, ``α = 0.1`` leaves most clients
  with one or two classes (SuperFedNAS uses α ∈ {100, 1, 0.1}).
* :func:`partition_dataset` — either of them over any map-style data set, as ``torch.utils.data.Subset``.

All functions are pure: the same arguments give the same partitions on every machine, so each
Flower ClientApp can compute its own part from ``partition-id`` without any data exchange.

Example::

    >>> parts = dirichlet_partition([0, 0, 0, 1, 1, 1, 2, 2, 2], num_partitions=3, alpha=1.0, seed=0,
    ...                             min_partition_size=1)
    >>> sorted(int(i) for p in parts for i in p)
    [0, 1, 2, 3, 4, 5, 6, 7, 8]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

__all__ = ["dataset_labels", "dirichlet_partition", "iid_partition", "label_histogram", "partition_dataset"]

PARTITIONERS = ("iid", "dirichlet")


def _check_partitions(num_items: int, num_partitions: int) -> None:
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, int) or num_partitions < 1:
        raise ValueError(f"num_partitions must be an int >= 1, got {num_partitions!r}")
    if num_items < num_partitions:
        raise ValueError(f"cannot split {num_items} items into {num_partitions} non-empty partitions")


def iid_partition(num_items: int, num_partitions: int, seed: int = 0) -> list[np.ndarray]:
    """Split ``range(num_items)`` into ``num_partitions`` random parts of near-equal size (sorted indices)."""
    _check_partitions(num_items, num_partitions)
    perm = np.random.default_rng(seed).permutation(num_items)
    return [np.sort(p) for p in np.array_split(perm, num_partitions)]


def dirichlet_partition(
    labels: Sequence[int] | np.ndarray,
    num_partitions: int,
    alpha: float,
    seed: int = 0,
    min_partition_size: int = 10,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Label-skewed split: per class, client shares ``~ Dir(α)`` (FedML's hetero partitioner).

    Args:
        labels: one integer label per item.
        num_partitions: number of clients.
        alpha: Dirichlet concentration (> 0); smaller is more skewed.
        seed: seeds everything (the same seed gives the same partitions).
        min_partition_size: draw again until every partition has at least this many items.
        max_tries: give up after this many draws.

    Returns:
        One sorted index array per partition; together they cover every item exactly once.

    Raises:
        ValueError: on bad arguments, or if ``max_tries`` draws never reached ``min_partition_size``.
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    _check_partitions(len(y), num_partitions)
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    if min_partition_size < 0 or min_partition_size * num_partitions > len(y):
        raise ValueError(
            f"min_partition_size must be in [0, {len(y) // num_partitions}] for {len(y)} items and "
            f"{num_partitions} partitions, got {min_partition_size}"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    fair_share = len(y) / num_partitions
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_partitions)]
        for c in classes:
            idx = np.flatnonzero(y == c)
            rng.shuffle(idx)
            shares = rng.dirichlet(np.full(num_partitions, float(alpha)))
            # FedML: clients that already hold more than an equal share receive nothing more.
            shares = shares * np.array([len(p) < fair_share for p in parts])
            if shares.sum() <= 0:
                shares = np.full(num_partitions, 1.0)
            shares = shares / shares.sum()
            cuts = (np.cumsum(shares) * len(idx)).astype(int)[:-1]
            for p, chunk in zip(parts, np.split(idx, cuts)):
                p.extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_partition_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(
        f"dirichlet_partition: no draw in {max_tries} tries gave every one of {num_partitions} partitions "
        f"{min_partition_size} items (alpha={alpha}, {len(y)} items); lower min_partition_size or raise alpha"
    )


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Integer labels of a map-style data set: ``.targets``, a ``TensorDataset``'s last tensor, or ``ds[i][1]``."""
    targets = getattr(dataset, "targets", None)
    if targets is None and hasattr(dataset, "tensors"):
        targets = dataset.tensors[-1]
    if targets is None:
        targets = [dataset[i][1] for i in range(len(dataset))]  # type: ignore[arg-type]
    if isinstance(targets, torch.Tensor):
        targets = targets.detach().cpu().numpy()
    labels = np.asarray([int(t) for t in targets], dtype=np.int64)
    return labels


def partition_dataset(
    dataset: Dataset,
    num_partitions: int,
    partitioner: str = "iid",
    *,
    alpha: float = 1.0,
    seed: int = 0,
    min_partition_size: int = 10,
) -> list[Subset]:
    """Split a map-style data set into ``num_partitions`` ``Subset``\\ s (``"iid"`` or ``"dirichlet"``)."""
    if partitioner not in PARTITIONERS:
        raise ValueError(f"partitioner must be one of {list(PARTITIONERS)}, got {partitioner!r}")
    n = len(dataset)  # type: ignore[arg-type]
    if partitioner == "iid":
        parts = iid_partition(n, num_partitions, seed)
    else:
        parts = dirichlet_partition(dataset_labels(dataset), num_partitions, alpha, seed, min_partition_size)
    return [Subset(dataset, p.tolist()) for p in parts]


def label_histogram(labels: Sequence[int] | np.ndarray, parts: Sequence[Any], num_classes: int) -> np.ndarray:
    """``[num_partitions, num_classes]`` counts of each label in each partition (to inspect the skew)."""
    y = np.asarray(labels)
    return np.stack([np.bincount(y[np.asarray(p, dtype=np.int64)], minlength=num_classes) for p in parts])

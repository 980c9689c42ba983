"""IID and Dirichlet partitioning: coverage, determinism, skew, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from ws_fed.partition import (
    dataset_labels,
    dirichlet_partition,
    iid_partition,
    label_histogram,
    partition_dataset,
)

LABELS = np.repeat(np.arange(10), 60)  # 600 items, 10 balanced classes


def covers_exactly(parts, n):
    flat = np.concatenate(parts)
    return len(flat) == n and np.array_equal(np.sort(flat), np.arange(n))


def test_iid_partition():
    parts = iid_partition(103, 4, seed=1)
    assert covers_exactly(parts, 103)
    assert sorted(len(p) for p in parts) == [25, 26, 26, 26]
    assert all(np.all(np.diff(p) > 0) for p in parts)
    assert all(np.array_equal(a, b) for a, b in zip(parts, iid_partition(103, 4, seed=1)))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, iid_partition(103, 4, seed=2)))


def test_dirichlet_partition_covers_and_is_seeded():
    parts = dirichlet_partition(LABELS, 8, alpha=1.0, seed=0)
    assert covers_exactly(parts, len(LABELS))
    assert min(len(p) for p in parts) >= 10
    again = dirichlet_partition(LABELS, 8, alpha=1.0, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = dirichlet_partition(LABELS, 8, alpha=1.0, seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_smaller_alpha_is_more_skewed():
    def top_class_share(alpha):
        hist = label_histogram(LABELS, dirichlet_partition(LABELS, 10, alpha=alpha, seed=0, min_partition_size=1), 10)
        return float((hist.max(1) / hist.sum(1)).mean())

    iid_like, medium, skewed = top_class_share(1000.0), top_class_share(1.0), top_class_share(0.1)
    assert iid_like < 0.2 < medium < skewed
    assert skewed > 0.6


def test_one_partition_holds_everything():
    parts = dirichlet_partition(LABELS, 1, alpha=0.5, seed=0)
    assert len(parts) == 1 and covers_exactly(parts, len(LABELS))


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_partitions=0, alpha=1.0), "num_partitions must be an int >= 1, got 0"),
    (dict(num_partitions=4, alpha=0.0), "alpha must be a finite number > 0, got 0.0"),
    (dict(num_partitions=4, alpha=float("inf")), "alpha must be a finite number > 0"),
    (dict(num_partitions=700, alpha=1.0), "cannot split 600 items into 700"),
    (dict(num_partitions=4, alpha=1.0, min_partition_size=200), r"min_partition_size must be in \[0, 150\]"),
])
def test_dirichlet_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dirichlet_partition(LABELS, **kwargs)


def test_dirichlet_gives_up_with_a_clear_error():
    with pytest.raises(ValueError, match="no draw in 3 tries"):
        dirichlet_partition(LABELS, 10, alpha=0.01, seed=0, min_partition_size=55, max_tries=3)


class Pairs(Dataset):
    """A plain map-style data set without .targets: items are (feature, label) tuples."""

    def __init__(self, labels):
        self.labels = list(labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.tensor([float(i)]), self.labels[i]


def test_partition_any_map_style_dataset():
    ds = Pairs(LABELS[:200])
    np.testing.assert_array_equal(dataset_labels(ds), LABELS[:200])
    subsets = partition_dataset(ds, 5, "dirichlet", alpha=0.5, seed=3, min_partition_size=5)
    assert sum(len(s) for s in subsets) == 200
    seen = sorted(int(s[i][0].item()) for s in subsets for i in range(len(s)))
    assert seen == list(range(200))
    iid = partition_dataset(ds, 5, "iid", seed=3)
    assert [len(s) for s in iid] == [40] * 5
    with pytest.raises(ValueError, match="partitioner must be one of"):
        partition_dataset(ds, 5, "shards")


def test_labels_from_tensor_dataset(digits):
    labels = dataset_labels(digits.train)
    assert labels.dtype == np.int64 and len(labels) == len(digits.train)
    assert set(labels.tolist()) == set(range(10))

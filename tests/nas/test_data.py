from __future__ import annotations

import numpy as np
import pytest
import torch

from ws_core import data as core
from ws_core.data import random_crop_flip
from ws_nas import ImageClassificationData
from ws_nas.data import load_digits


def test_digits_splits_are_stratified_and_standardised():
    data = ImageClassificationData("digits", held_out_fraction=0.5, batch_size=32)
    data.setup()
    train, held, test = data.splits["train"].tensors, data.splits["held_out"].tensors, data.splits["test"].tensors
    assert len(test[1]) == 540 and len(train[1]) + len(held[1]) == 1797 - 540
    assert abs(len(train[1]) - len(held[1])) <= 1
    assert train[0].shape[1:] == (1, 8, 8) and (data.in_chans, data.input_size, data.num_classes) == (1, 8, 10)
    assert torch.bincount(test[1]).min() >= 50                        # every class in the test split
    both = torch.cat([train[0], held[0]])
    assert abs(both.mean().item()) < 1e-4 and abs(both.std().item() - 1) < 1e-2
    batch, _, _ = next(iter(data.train_dataloader()))     # CombinedLoader: (batch, batch_idx, dataloader_idx)
    assert set(batch) == {"train", "held_out"}
    assert batch["train"][0].shape == (32, 1, 8, 8) and batch["held_out"][1].shape == (32,)


def test_digits_32x32_rgb_and_plain_training_batches():
    data = ImageClassificationData("digits", image_size=32, batch_size=16, train_limit=100)
    data.setup()
    x, _y = next(iter(data.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and data.in_chans == 3
    assert len(data.splits["train"]) == 100
    assert len(data.splits["test"]) == 540


def test_digits_come_from_ws_core_with_its_split():
    data = ImageClassificationData("digits", seed=2)
    data.setup()
    x, y = core.load_digits(8)
    train, test = core.stratified_split(y, 0.3, seed=2)
    mean = x[train].mean(dim=(0, 2, 3), keepdim=True)
    std = x[train].std(dim=(0, 2, 3), keepdim=True)
    assert torch.equal(data.splits["test"].tensors[0], (x[test] - mean) / std)
    assert torch.equal(data.splits["train"].tensors[1], y[train])
    assert torch.equal(load_digits(32)[0], core.load_digits(32, channels=3)[0])


def test_fashion_mnist_from_idx_files(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    rng = np.random.default_rng(0)
    for name, n in (("train", 120), ("t10k", 30)):
        core.write_idx(raw / f"{name}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        core.write_idx(raw / f"{name}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10)
    data = ImageClassificationData("fashion_mnist", root=str(tmp_path), batch_size=8, held_out_fraction=0.5)
    data.setup()
    assert (data.in_chans, data.input_size, data.augment) == (1, 28, True)
    assert (len(data.splits["train"]), len(data.splits["held_out"]), len(data.splits["test"])) == (60, 60, 30)
    assert data.splits["test"].tensors[0].shape[1:] == (1, 28, 28)
    big = ImageClassificationData("fashion_mnist", root=str(tmp_path), image_size=32, train_limit=40)
    big.setup()
    assert big.in_chans == 3 and big.splits["train"].tensors[0].shape == (40, 3, 32, 32)
    assert torch.bincount(big.splits["train"].tensors[1]).tolist() == [4] * 10


def test_cifar10_is_never_downloaded_by_default(tmp_path):
    data = ImageClassificationData("cifar10", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 not found under .*allowed: download=True"):
        data.setup()
    assert list(tmp_path.iterdir()) == []


def test_crop_flip_keeps_shapes_and_content():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    y = random_crop_flip(x, padding=0, flip=False)
    assert torch.equal(x, y)
    z = random_crop_flip(x, padding=2)
    assert z.shape == x.shape


@pytest.mark.parametrize("kwargs, message", [
    (dict(dataset="mnist"), r"dataset must be one of \('digits', 'fashion_mnist', 'cifar10'\), got 'mnist'"),
    (dict(image_size=0), "image_size must be an integer >= 1, got 0"),
    (dict(in_chans=2), r"in_chans must be one of \(1, 3\), got 2"),
    (dict(dataset="cifar10", root="data", in_chans=1), r"in_chans must be one of \(3,\), got 1"),
    (dict(held_out_fraction=1.0), r"held_out_fraction must be in \(0, 1\), got 1.0"),
    (dict(dataset="cifar10"), "pass root"),
    (dict(dataset="fashion_mnist"), "pass root"),
    (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (dict(train_limit=5), "train_limit must be an integer >= 20, got 5"),
])
def test_bad_data_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageClassificationData(**kwargs)

from __future__ import annotations

import pytest
import torch

from ws_nas import ImageClassificationData
from ws_nas.data import _random_crop_flip


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


def test_cifar10_is_never_downloaded_by_default(tmp_path):
    data = ImageClassificationData("cifar10", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 not found under .*pass download=True"):
        data.setup()
    assert list(tmp_path.iterdir()) == []


def test_crop_flip_keeps_shapes_and_content():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    y = _random_crop_flip(x, padding=0, flip=False)
    assert torch.equal(x, y)
    z = _random_crop_flip(x, padding=2)
    assert z.shape == x.shape


@pytest.mark.parametrize("kwargs, message", [
    (dict(dataset="mnist"), "dataset must be one of"),
    (dict(image_size=16), "image_size must be 8 or 32"),
    (dict(held_out_fraction=1.0), "held_out_fraction must be in"),
    (dict(dataset="cifar10"), "pass root"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_data_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageClassificationData(**kwargs)

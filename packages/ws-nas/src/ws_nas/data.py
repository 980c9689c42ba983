"""Data for search and retraining: scikit-learn digits (bundled, offline) and CIFAR-10 (local files).

:class:`ImageClassificationData` is a LightningDataModule with three splits:

* **test** — what ``val_dataloader`` / ``test_dataloader`` return (digits: a stratified
  ``test_fraction`` of the 1,797 images; CIFAR-10: the official 10,000 test images);
* **train** — the rest;
* with ``held_out_fraction`` set (search), the train part is split again (stratified) into the
  weights' *train* split and the architecture's *held-out* split (DARTS: 50/50), and
  ``train_dataloader`` yields ``{"train": (x, y), "held_out": (x, y)}`` batches (Lightning
  ``CombinedLoader``, ``max_size_cycle``).

Digits are 8×8 grey images (values 0–16). ``image_size=8`` (default) keeps them as 1×8×8 tensors;
``image_size=32`` upsamples them bilinearly to 32×32 and repeats the channel to 3 (the CIFAR input
shape). Inputs are standardised with the train split's per-channel mean and std.

CIFAR-10 is read from ``root`` with torchvision (``cifar-10-batches-py``) and is only downloaded
with ``download=True``; training batches then get the usual random crop (padding 4) and horizontal
flip, applied on the batch tensors.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import CombinedLoader
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["DATASETS", "ImageClassificationData", "load_cifar10", "load_digits"]

DATASETS = ("digits", "cifar10")


def load_digits(image_size: int = 8) -> tuple[Tensor, Tensor]:
    """scikit-learn's digits as float images ``[N, C, H, W]`` in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits as _load

    if image_size not in (8, 32):
        raise ValueError(f"digits: image_size must be 8 or 32, got {image_size}")
    d = _load()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if image_size == 32:
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    return x, torch.tensor(d.target, dtype=torch.int64)


def load_cifar10(root: str | Path, train: bool, download: bool = False) -> tuple[Tensor, Tensor]:
    """CIFAR-10 from ``root`` as float images in [0, 1]; raises ``FileNotFoundError`` if absent."""
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(root), train=train, download=download)
    except RuntimeError as e:
        raise FileNotFoundError(
            f"CIFAR-10 not found under {root!r} (expected {Path(root) / 'cifar-10-batches-py'}); "
            "pass download=True to fetch it (needs internet)"
        ) from e
    x = torch.tensor(np.asarray(ds.data), dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    return x, torch.tensor(ds.targets, dtype=torch.int64)


def _random_crop_flip(x: Tensor, padding: int = 4, flip: bool = True) -> Tensor:
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    i = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
    j = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
    rows = (i.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (j.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols].squeeze(1).permute(0, 3, 1, 2)
    if flip:
        mask = torch.rand(n, device=x.device) < 0.5
        out = torch.where(mask.view(n, 1, 1, 1), out.flip(-1), out)
    return out.contiguous()


class ImageClassificationData(L.LightningDataModule):
    """Digits or CIFAR-10 with train / held-out / test splits (see the module docstring).

    Args:
        dataset: ``"digits"`` (bundled with scikit-learn) or ``"cifar10"`` (read from ``root``).
        root: folder holding ``cifar-10-batches-py`` (CIFAR-10 only).
        image_size: digits: 8 (1×8×8, default) or 32 (3×32×32); CIFAR-10: 32.
        batch_size: batch size of every loader.
        held_out_fraction: share of the train part held out for the architecture parameters
            (search; DARTS: 0.5), or ``None`` for plain ``(x, y)`` training batches.
        test_fraction: digits only: the stratified test share.
        seed: seed of the splits and of the training-batch shuffling.
        augment: random crop + flip on training batches (default: on for CIFAR-10, off for digits).
        download: CIFAR-10 only: fetch it if missing.
        num_workers: DataLoader workers.
        train_limit: optional cap on the train part (a stratified subset), for quick runs.
    """

    def __init__(
        self,
        dataset: str = "digits",
        root: str | None = None,
        image_size: int | None = None,
        batch_size: int = 64,
        held_out_fraction: float | None = None,
        test_fraction: float = 0.3,
        seed: int = 0,
        augment: bool | None = None,
        download: bool = False,
        num_workers: int = 0,
        train_limit: int | None = None,
    ):
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
        if image_size is None:
            image_size = 8 if dataset == "digits" else 32
        if dataset == "digits" and image_size not in (8, 32):
            raise ValueError(f"digits: image_size must be 8 or 32, got {image_size}")
        if dataset == "cifar10" and image_size != 32:
            raise ValueError(f"cifar10: image_size must be 32, got {image_size}")
        if dataset == "cifar10" and root is None:
            raise ValueError("cifar10: pass root, the folder holding cifar-10-batches-py")
        if held_out_fraction is not None and not 0.0 < held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be in (0, 1) or None, got {held_out_fraction}")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if train_limit is not None and train_limit < 20:
            raise ValueError(f"train_limit must be >= 20 or None, got {train_limit}")
        self.dataset = dataset
        self.root = root
        self.image_size = image_size
        self.batch_size = batch_size
        self.held_out_fraction = held_out_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.augment = (dataset == "cifar10") if augment is None else augment
        self.download = download
        self.num_workers = num_workers
        self.train_limit = train_limit
        self.splits: dict[str, TensorDataset] = {}

    # Shapes, known before any data is read (for linking into the model's arguments).
    @property
    def num_classes(self) -> int:
        return 10

    @property
    def in_chans(self) -> int:
        return 1 if (self.dataset == "digits" and self.image_size == 8) else 3

    @property
    def input_size(self) -> int:
        return self.image_size

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.dataset == "digits":
            x, y = load_digits(self.image_size)
            idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=self.test_fraction,
                                                   random_state=self.seed, stratify=y.numpy())
            x_train, y_train, x_test, y_test = x[idx_train], y[idx_train], x[idx_test], y[idx_test]
        else:
            x_train, y_train = load_cifar10(self.root, train=True, download=self.download)
            x_test, y_test = load_cifar10(self.root, train=False, download=self.download)
        if self.train_limit is not None and self.train_limit < len(y_train):
            keep, _ = train_test_split(np.arange(len(y_train)), train_size=self.train_limit,
                                       random_state=self.seed, stratify=y_train.numpy())
            x_train, y_train = x_train[keep], y_train[keep]
        mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        self.splits["test"] = TensorDataset(x_test, y_test)
        if self.held_out_fraction is None:
            self.splits["train"] = TensorDataset(x_train, y_train)
        else:
            n_held = max(1, min(len(y_train) - 1, math.floor(len(y_train) * self.held_out_fraction)))
            idx_w, idx_a = train_test_split(np.arange(len(y_train)), test_size=n_held,
                                            random_state=self.seed, stratify=y_train.numpy())
            self.splits["train"] = TensorDataset(x_train[idx_w], y_train[idx_w])
            self.splits["held_out"] = TensorDataset(x_train[idx_a], y_train[idx_a])

    def _loader(self, split: str, shuffle: bool, offset: int = 0) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed + offset)
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=shuffle, generator=g,
                          num_workers=self.num_workers)

    def train_dataloader(self):
        if self.held_out_fraction is None:
            return self._loader("train", shuffle=True)
        return CombinedLoader({"train": self._loader("train", True), "held_out": self._loader("held_out", True, 1)},
                              mode="max_size_cycle")

    def val_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def calibration_dataloader(self) -> DataLoader:
        """Training images without shuffling, for BN recalibration / post-training quantization."""
        return self._loader("train", shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.augment and self.trainer is not None and self.trainer.training:
            if isinstance(batch, dict):
                return {k: [_random_crop_flip(v[0]), v[1]] for k, v in batch.items()}
            return [_random_crop_flip(batch[0]), batch[1]]
        return batch

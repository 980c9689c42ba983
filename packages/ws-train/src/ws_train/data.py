"""Data modules: scikit-learn digits (bundled, offline), CIFAR-10/100 (torchvision), ImageFolder (your data).

All share :class:`ClassificationDataModule`: ``num_classes`` (linked to the model by the CLI),
seeded, resumable shuffling (a :class:`~torch.utils.data.DistributedSampler` over the Trainer's world
size, whose order is a function of ``(seed, epoch)``), and :meth:`~ClassificationDataModule.calibration_dataloader`,
the training images in a fixed order for BN recalibration (OFA: 2000 training images).

* :class:`DigitsDataModule` — scikit-learn's ``load_digits`` (1797 real 8×8 handwritten digits, shipped
  with scikit-learn, no download), upscaled to ``image_size``² RGB: the data of the tests and the demo.
* :class:`CIFAR10DataModule`, :class:`CIFAR100DataModule` — torchvision's CIFAR, downloaded on demand
  (``prepare_data``), standard augmentation (random crop with 4-pixel padding, horizontal flip).
* :class:`ImageFolderDataModule` — ``root/<class>/<image>`` folders (torchvision ``ImageFolder``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset, TensorDataset

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "ClassificationDataModule",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "load_digits_images",
]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


class ClassificationDataModule(L.LightningDataModule):
    """Shared loaders of the image-classification data modules.

    Subclasses set ``self.train_set``, ``self.val_set`` (and optionally ``self.test_set`` and
    ``self.calibration_set``: the training images with evaluation transforms) in ``setup`` and define
    ``num_classes``.

    Args:
        batch_size: batch size of every loader.
        num_workers: ``DataLoader`` worker processes.
        calibration_batch_size: batch size for BN recalibration (``None``: ``batch_size``).
        seed: shuffling seed (the order of epoch ``e`` depends only on ``seed`` and ``e``).
    """

    num_classes: int

    def __init__(self, batch_size: int = 64, num_workers: int = 0, calibration_batch_size: int | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.num_workers = _check_int("num_workers", num_workers, 0)
        self.calibration_batch_size = (
            self.batch_size if calibration_batch_size is None else _check_int("calibration_batch_size",
                                                                              calibration_batch_size, 1)
        )
        self.seed = int(seed)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.calibration_set: Dataset | None = None

    def _require(self, name: str) -> Dataset:
        ds = getattr(self, name)
        if ds is None:
            self.setup("fit")
            ds = getattr(self, name)
        return ds

    def _loader(self, ds: Dataset, **kwargs: Any) -> DataLoader:
        return DataLoader(ds, batch_size=self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, **kwargs)

    def train_dataloader(self) -> DataLoader:
        ds = self._require("train_set")
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        return self._loader(ds, sampler=sampler, drop_last=len(ds) // world > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require("val_set"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        ds = self.test_set if self.test_set is not None else self._require("val_set")
        return self._loader(ds, shuffle=False)

    def calibration_dataloader(self) -> DataLoader:
        """Training images (evaluation transforms where the module has them) in a fixed shuffled order."""
        ds = self._require("train_set") if self.calibration_set is None else self.calibration_set
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(self.seed + 1))
        return DataLoader(ds, batch_size=self.calibration_batch_size, sampler=sampler, num_workers=self.num_workers)


# Digits ------------------------------------------------------------------------------------------------
def load_digits_images(image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as float images ``(1797, 3, image_size, image_size)`` in [0, 1] and labels.

    The 8×8 images (values 0–16) are scaled to [0, 1], upscaled bilinearly and repeated to 3 channels.
    """
    from sklearn.datasets import load_digits

    _check_int("image_size", image_size, 8)
    digits = load_digits()
    x = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp_(0, 1)
    return x.expand(-1, 3, -1, -1).contiguous(), torch.as_tensor(digits.target, dtype=torch.long)


class DigitsDataModule(ClassificationDataModule):
    """scikit-learn's handwritten digits (10 classes, 1797 images) as a small offline CIFAR-like data set.

    A stratified, seeded split holds out ``val_fraction`` of the images for validation (360 of 1797
    at 0.2); images are normalised with the training split's mean and standard deviation.

    Args:
        image_size: side of the upscaled RGB images (32 matches the ``ws_*_32`` SuperNets).
        val_fraction: share of the images held out for validation, in (0, 1).
        train_size: use only the first ``train_size`` training images (``None``: all) — for quick runs.
        batch_size, num_workers, calibration_batch_size, seed: see :class:`ClassificationDataModule`.
    """

    num_classes = 10

    def __init__(self, image_size: int = 32, val_fraction: float = 0.2, train_size: int | None = None,
                 batch_size: int = 64, num_workers: int = 0, calibration_batch_size: int | None = None,
                 seed: int = 0) -> None:
        super().__init__(batch_size, num_workers, calibration_batch_size, seed)
        self.image_size = _check_int("image_size", image_size, 8)
        self.val_fraction = _check_fraction("val_fraction", val_fraction)
        self.train_size = None if train_size is None else _check_int("train_size", train_size, 1)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from sklearn.model_selection import train_test_split

        x, y = load_digits_images(self.image_size)
        idx_train, idx_val = train_test_split(
            torch.arange(len(y)).numpy(), test_size=self.val_fraction, random_state=self.seed, stratify=y.numpy()
        )
        idx_train, idx_val = torch.as_tensor(idx_train), torch.as_tensor(idx_val)
        if self.train_size is not None:
            idx_train = idx_train[: self.train_size]
        mean, std = x[idx_train].mean(), x[idx_train].std()
        x = (x - mean) / std
        self.train_set = TensorDataset(x[idx_train], y[idx_train])
        self.val_set = TensorDataset(x[idx_val], y[idx_val])


# CIFAR -------------------------------------------------------------------------------------------------
class CIFAR10DataModule(ClassificationDataModule):
    """CIFAR-10 through torchvision: downloaded into ``root`` on demand, standard augmentation.

    Training: ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, normalisation; evaluation:
    normalisation only. Validation uses the official test split unless ``val_size`` training images
    are held out instead (OFA holds out 10000 ImageNet training images).

    Args:
        root: folder of the torchvision data set files.
        download: download into ``root`` in ``prepare_data`` when missing (once per node).
        val_size: hold out this many training images for validation (0: validate on the test split).
        batch_size, num_workers, calibration_batch_size, seed: see :class:`ClassificationDataModule`.
    """

    num_classes = 10
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

    @staticmethod
    def dataset_class() -> type:
        from torchvision.datasets import CIFAR10

        return CIFAR10

    def __init__(self, root: str = "data", download: bool = True, val_size: int = 0, batch_size: int = 128,
                 num_workers: int = 2, calibration_batch_size: int | None = None, seed: int = 0) -> None:
        super().__init__(batch_size, num_workers, calibration_batch_size, seed)
        self.root = str(root)
        self.download = bool(download)
        self.val_size = _check_int("val_size", val_size, 0)

    def transforms(self, train: bool) -> Any:
        from torchvision import transforms as T

        norm = [T.ToTensor(), T.Normalize(self.mean, self.std)]
        return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *norm] if train else norm)

    def _open(self, train: bool, transform: Any, download: bool = False) -> Dataset:
        cls = self.dataset_class()
        try:
            return cls(self.root, train=train, transform=transform, download=download)
        except RuntimeError as e:
            raise FileNotFoundError(
                f"{cls.__name__} not found in {self.root!r} ({e}); allowed: download=True to fetch it, "
                "or point root at a folder holding the torchvision files"
            ) from e

    def prepare_data(self) -> None:
        for train in (True, False):
            self._open(train, None, download=self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_aug = self._open(True, self.transforms(train=True))
        train_eval = self._open(True, self.transforms(train=False))
        test = self._open(False, self.transforms(train=False))
        n = len(train_aug)
        if self.val_size >= n:
            raise ValueError(f"val_size must be < {n} (training images), got {self.val_size}")
        if self.val_size:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
            train_idx, val_idx = perm[self.val_size:], perm[: self.val_size]
            self.train_set = Subset(train_aug, train_idx)
            self.calibration_set = Subset(train_eval, train_idx)
            self.val_set = Subset(train_eval, val_idx)
        else:
            self.train_set, self.calibration_set, self.val_set = train_aug, train_eval, test
        self.test_set = test


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 through torchvision (same options as :class:`CIFAR10DataModule`)."""

    num_classes = 100
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

    @staticmethod
    def dataset_class() -> type:
        from torchvision.datasets import CIFAR100

        return CIFAR100


# ImageFolder -------------------------------------------------------------------------------------------
class ImageFolderDataModule(ClassificationDataModule):
    """Your own images in ``root/<class name>/<image>`` folders (torchvision ``ImageFolder``).

    Training: ``RandomResizedCrop(image_size)`` and horizontal flip; evaluation: resize to
    ``image_size / 0.875`` and centre crop (timm's ``crop_pct``); ImageNet normalisation by default.

    Args:
        root: training folder.
        val_root: validation folder with the same class folders (``None``: hold out ``val_fraction`` of ``root``).
        val_fraction: share of ``root`` held out when there is no ``val_root``.
        image_size: side of the network's input.
        mean, std: normalisation.
        batch_size, num_workers, calibration_batch_size, seed: see :class:`ClassificationDataModule`.
    """

    def __init__(self, root: str, val_root: str | None = None, val_fraction: float = 0.1, image_size: int = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, batch_size: int = 64,
                 num_workers: int = 2, calibration_batch_size: int | None = None, seed: int = 0) -> None:
        super().__init__(batch_size, num_workers, calibration_batch_size, seed)
        for name, path in (("root", root), ("val_root", val_root)):
            if path is not None and not Path(path).is_dir():
                raise ValueError(f"ImageFolderDataModule: {name} must be an existing folder, got {path!r}")
        self.root = str(root)
        self.val_root = None if val_root is None else str(val_root)
        self.val_fraction = _check_fraction("val_fraction", val_fraction)
        self.image_size = _check_int("image_size", image_size, 8)
        self.mean, self.std = tuple(mean), tuple(std)

    @property
    def classes(self) -> list[str]:
        from torchvision.datasets.folder import find_classes

        return find_classes(self.root)[0]

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.classes)

    def transforms(self, train: bool) -> Any:
        from torchvision import transforms as T

        norm = [T.ToTensor(), T.Normalize(self.mean, self.std)]
        if train:
            return T.Compose([T.RandomResizedCrop(self.image_size), T.RandomHorizontalFlip(), *norm])
        return T.Compose([T.Resize(round(self.image_size / 0.875)), T.CenterCrop(self.image_size), *norm])

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from torchvision.datasets import ImageFolder

        train_aug = ImageFolder(self.root, transform=self.transforms(train=True))
        train_eval = ImageFolder(self.root, transform=self.transforms(train=False))
        if self.val_root is not None:
            val = ImageFolder(self.val_root, transform=self.transforms(train=False))
            if val.classes != train_aug.classes:
                raise ValueError(f"val_root classes {val.classes} differ from root classes {train_aug.classes}")
            self.train_set, self.calibration_set, self.val_set = train_aug, train_eval, val
            return
        n = len(train_aug)
        n_val = max(1, round(self.val_fraction * n))
        if n_val >= n:
            raise ValueError(f"ImageFolderDataModule: {n} images cannot be split with val_fraction={self.val_fraction}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        train_idx, val_idx = perm[n_val:], perm[:n_val]
        self.train_set = Subset(train_aug, train_idx)
        self.calibration_set = Subset(train_eval, train_idx)
        self.val_set = Subset(train_eval, val_idx)

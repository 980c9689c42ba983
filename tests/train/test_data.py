"""Data modules on offline data: the bundled digits, CIFAR in torchvision's file format (generated), ImageFolder."""

from __future__ import annotations

import pickle
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10

from ws_core.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, load_digits, stratified_split, write_idx
from ws_train import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
)
from ws_train.data import load_digits_images


def test_digits_images_are_upscaled_rgb():
    x, y = load_digits_images(32)
    assert x.shape == (1797, 3, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(x[:, 0], x[:, 2])  # grey digits, repeated to RGB
    assert sorted(y.unique().tolist()) == list(range(10))
    x8, _ = load_digits_images(8)
    assert x8.shape == (1797, 3, 8, 8)


def test_digits_split_is_stratified_seeded_and_normalised():
    dm = DigitsDataModule(seed=0)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (1437, 360)
    x = dm.train_set.tensors[0]
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    val_counts = torch.bincount(dm.val_set.tensors[1], minlength=10)
    assert int(val_counts.min()) >= 35 and int(val_counts.max()) <= 37  # ~36 of each digit
    again = DigitsDataModule(seed=0)
    again.setup()
    assert torch.equal(again.val_set.tensors[1], dm.val_set.tensors[1])
    other = DigitsDataModule(seed=1)
    other.setup()
    assert not torch.equal(other.val_set.tensors[1], dm.val_set.tensors[1])
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\), got 1.5"):
        DigitsDataModule(val_fraction=1.5)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        DigitsDataModule(batch_size=0)


def test_digits_module_reads_ws_core_images_and_split():
    x, y = load_digits(32, channels=3)
    assert torch.equal(load_digits_images(32)[0], x) and torch.equal(load_digits_images(32)[1], y)
    dm = DigitsDataModule(image_size=32, seed=3)
    dm.setup()
    train, val = stratified_split(y, 0.2, seed=3)
    mean, std = x[train].mean(), x[train].std()
    assert torch.equal(dm.train_set.tensors[0], (x[train] - mean) / std)
    assert torch.equal(dm.val_set.tensors[1], y[val])


def _order(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return torch.cat([y for _, y in loader])


def test_train_order_depends_only_on_seed_and_epoch_and_shards_by_rank():
    dm = DigitsDataModule(image_size=8, batch_size=16, train_size=160)
    dm.setup()
    a, b = dm.train_dataloader(), dm.train_dataloader()
    assert torch.equal(_order(a, 3), _order(b, 3))  # resumable: a new loader repeats epoch 3
    assert not torch.equal(_order(a, 3), _order(a, 4))
    # under DDP each rank reads its own half, from the Trainer's world size and rank
    shards = []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(0)
        shards.append(set(loader.sampler))
    assert len(shards[0]) == len(shards[1]) == 80 and not shards[0] & shards[1]


def _fake_cifar_class(root):
    """torchvision's CIFAR10 reading generated files of the official format (md5 checks off)."""

    class FakeCIFAR10(CIFAR10):
        train_list: ClassVar = [["data_batch_1", None], ["data_batch_2", None]]
        test_list: ClassVar = [["test_batch", None]]
        meta: ClassVar = {"filename": "batches.meta", "key": "label_names", "md5": None}

    folder = root / FakeCIFAR10.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 20), ("data_batch_2", 20), ("test_batch", 10)):
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": [i % 10 for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return FakeCIFAR10


def test_cifar10_on_generated_files_in_torchvision_format(tmp_path, monkeypatch):
    fake = _fake_cifar_class(tmp_path)
    monkeypatch.setattr(CIFAR10DataModule, "dataset_class", staticmethod(lambda: fake))
    dm = CIFAR10DataModule(root=str(tmp_path), download=False, batch_size=8, num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == 10
    assert (len(dm.train_set), len(dm.val_set), len(dm.calibration_set)) == (40, 10, 40)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.long
    names = [type(t).__name__ for t in dm.train_set.transform.transforms]
    assert names == ["RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert [type(t).__name__ for t in dm.val_set.transform.transforms] == ["ToTensor", "Normalize"]
    # the calibration images are the training images without augmentation: identical on every read
    assert torch.equal(dm.calibration_set[3][0], dm.calibration_set[3][0])
    held = CIFAR10DataModule(root=str(tmp_path), download=False, val_size=8, num_workers=0)
    held.setup()
    assert (len(held.train_set), len(held.val_set), len(held.test_set)) == (32, 8, 10)
    assert not set(held.train_set.indices) & set(held.val_set.indices)


def test_cifar_without_files_and_without_download_says_how_to_fix(tmp_path):
    dm = CIFAR10DataModule(root=str(tmp_path), download=False)
    with pytest.raises(FileNotFoundError, match=r"CIFAR10 not found under .*allowed: download=True"):
        dm.prepare_data()
    assert CIFAR100DataModule(root=str(tmp_path), download=False).num_classes == 100
    with pytest.raises(FileNotFoundError, match="CIFAR100 not found"):
        CIFAR100DataModule(root=str(tmp_path), download=False).prepare_data()


def _image_folder(root, classes=("cat", "dog", "eel"), per_class=4):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_image_folder_split_and_batches(tmp_path):
    root = _image_folder(tmp_path / "train")
    dm = ImageFolderDataModule(str(root), image_size=8, val_fraction=0.25, batch_size=4, num_workers=0)
    assert dm.num_classes == 3 and dm.classes == ["cat", "dog", "eel"]
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (9, 3)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 8, 8) and set(y.tolist()) <= {0, 1, 2}
    xv, _ = next(iter(dm.val_dataloader()))
    assert xv.shape == (3, 3, 8, 8)


def test_image_folder_val_root_and_errors(tmp_path):
    root = _image_folder(tmp_path / "train")
    val = _image_folder(tmp_path / "val", per_class=2)
    dm = ImageFolderDataModule(str(root), val_root=str(val), image_size=8, num_workers=0)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (12, 6)
    other = _image_folder(tmp_path / "other", classes=("cat", "fox"), per_class=1)
    with pytest.raises(ValueError, match=r"val_root classes \['cat', 'fox'\] differ"):
        ImageFolderDataModule(str(root), val_root=str(other), num_workers=0).setup()
    with pytest.raises(ValueError, match="root must be an existing folder, got 'missing'"):
        ImageFolderDataModule("missing")


def _fashion_idx(root, n_train=200, n_test=50):
    """Small Fashion-MNIST IDX files (random images, balanced labels) under root/FashionMNIST/raw."""
    raw = root / "FashionMNIST" / "raw"
    rng = np.random.default_rng(0)
    files = {}
    for name, n in (("train", n_train), ("t10k", n_test)):
        files[name] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10
        write_idx(raw / f"{name}-images-idx3-ubyte", files[name][0])
        write_idx(raw / f"{name}-labels-idx1-ubyte", files[name][1])
    return files


def test_fashion_mnist_module_on_generated_idx_files(tmp_path):
    files = _fashion_idx(tmp_path)
    dm = FashionMNISTDataModule(root=str(tmp_path), download=False, val_size=50, train_size=100, batch_size=16,
                                seed=0)
    dm.prepare_data()                                         # files present: nothing fetched, nothing written
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set), len(dm.calibration_set)) == (100, 50, 50, 100)
    assert torch.bincount(dm.val_set.labels).tolist() == [5] * 10       # stratified
    assert torch.bincount(dm.train_set.labels).tolist() == [10] * 10
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x[:, 0], x[:, 2])                      # grey repeated to RGB
    # evaluation batches: the stored images, normalised with Fashion-MNIST's mean and std
    xt, yt = next(iter(dm.test_dataloader()))
    images, labels = files["t10k"]
    expected = (torch.from_numpy(images[:16]).float() / 255 - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0]
    assert torch.allclose(xt[:, 1], expected, atol=1e-5) and torch.equal(yt, torch.from_numpy(labels[:16]).long())
    # training batches are augmented (crop + flip), calibration batches are not
    idx = list(range(16))
    plain, _ = dm.calibration_set.__getitems__(idx)
    torch.manual_seed(0)
    augmented, _ = dm.train_set.__getitems__(idx)
    assert not torch.equal(plain, augmented) and plain.shape == augmented.shape
    assert torch.equal(dm.calibration_set.images, dm.train_set.images)   # one uint8 tensor, shared
    assert dm.train_set.images.dtype == torch.uint8
    # seeded: the same seed holds out the same images, another seed others
    again = FashionMNISTDataModule(root=str(tmp_path), download=False, val_size=50, train_size=100, seed=0)
    again.setup()
    assert torch.equal(again.val_set.images, dm.val_set.images)
    other = FashionMNISTDataModule(root=str(tmp_path), download=False, val_size=50, train_size=100, seed=1)
    other.setup()
    assert not torch.equal(other.val_set.images, dm.val_set.images)
    assert sorted(p.name for p in (tmp_path / "FashionMNIST" / "raw").iterdir()) == sorted(
        f"{n}-{k}" for n in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte"))


def test_fashion_mnist_module_sizes_channels_and_errors(tmp_path):
    _fashion_idx(tmp_path)
    dm = FashionMNISTDataModule(root=str(tmp_path), download=False, image_size=32, in_chans=1, val_size=0,
                                augment=False, batch_size=8)
    dm.setup()
    assert dm.val_set is dm.test_set and len(dm.train_set) == 200 and dm.train_set.images.shape[1:] == (1, 32, 32)
    x, _ = next(iter(dm.train_dataloader()))
    xc, _ = next(iter(dm.calibration_dataloader()))
    assert x.shape == (8, 1, 32, 32) and xc.shape == (8, 1, 32, 32)
    with pytest.raises(ValueError, match=r"in_chans must be one of \(1, 3\), got 2"):
        FashionMNISTDataModule(in_chans=2)
    with pytest.raises(ValueError, match="image_size must be an integer >= 1, got 0"):
        FashionMNISTDataModule(image_size=0)
    with pytest.raises(ValueError, match="val_size must be < 200"):
        FashionMNISTDataModule(root=str(tmp_path), download=False, val_size=200).setup()
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST not found"):
        FashionMNISTDataModule(root=str(tmp_path / "none"), download=False, cache_dir=str(tmp_path / "cache")).setup()
    assert not (tmp_path / "none").exists() and not (tmp_path / "cache").exists()


def test_eval_batch_size_sets_the_validation_and_test_batches_only():
    dm = DigitsDataModule(image_size=8, batch_size=16, eval_batch_size=100)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))[0].shape[0] == 16
    assert next(iter(dm.val_dataloader()))[0].shape[0] == 100
    assert next(iter(dm.test_dataloader()))[0].shape[0] == 100
    dm.eval_batch_size = 7  # an attribute: callers that evaluate many SubNets raise it for a while
    assert next(iter(dm.val_dataloader()))[0].shape[0] == 7
    assert DigitsDataModule(batch_size=16).eval_batch_size == 16
    with pytest.raises(ValueError, match=r"eval_batch_size must be an integer >= 1, got 0"):
        DigitsDataModule(eval_batch_size=0)

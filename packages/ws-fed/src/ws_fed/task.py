"""The learning task in plain PyTorch (no Flower imports): data, SuperNet, local SubNet training, evaluation.

* :func:`load_digits` — the bundled scikit-learn digits (1,797 real 8×8 grayscale images, offline;
  ``ws_core.data.load_digits``, the loader ws-train and ws-nas use too), split into stratified
  train / validation / test sets; the train split is what clients partition.
* :func:`load_fashion_mnist` — Fashion-MNIST (``ws_core.data.load_fashion_mnist``, prepared under
  ``root``): a seeded stratified subset of its training file split into train / validation, its test
  file as test, standardised and resized the same way. :func:`load_data` picks either by
  ``FedConfig.dataset`` (:data:`DATASETS`); the ClientApp, the ServerApp and the benchmark all use it.
* :func:`build_supernet` — a ws-core SuperNet from timm's registry, for 1-channel inputs at
  ``image_size`` (its ``resolution`` dimension, so MACs are counted at the size actually used);
  :func:`local_supernet` — a fresh copy of it; :func:`scratch_supernet` — the copy a ClientApp reuses
  every round (one per thread).
* :func:`load_subnet_arrays` / :func:`subnet_arrays` — write the received weight slices into a local
  SuperNet, read the trained ones back: a client *materialises* its SubNet by loading its slices into a
  local SuperNet and activating it (in place, ws-core's actuation), so only the SubNet's elements are
  read, trained and returned.
* :func:`train_subnet` — SGD with cross-entropy and gradient clipping on the active SubNet.
* :func:`evaluate_subnet` — accuracy and loss of one SubNet, after BN recalibration on a few batches
  (``ws_core.bn.recalibrate_bn``), as OFA evaluates SubNets of a shared SuperNet.
* :func:`set_identity_bn` — BatchNorm as SuperFedNAS runs it by default (``bn-mode = "frozen"``, see
  :data:`BN_MODES`): every BN layer an identity (γ = 1, β = 0, running mean 0, running variance 1) that
  local training leaves as it is.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import ws_core  # noqa: F401  (registers the ws_* SuperNets in timm)
from ws_core import SubNetConfig, SuperNet
from ws_core import data as ws_data
from ws_core.bn import recalibrate_bn
from ws_core.data import check_fraction, check_image_size

from .partition import partition_dataset
from .payload import check_subnet_arrays, region_shapes

__all__ = [
    "BN_MODES",
    "DATASETS",
    "DataSplits",
    "DigitsSplits",
    "EvalResult",
    "TrainResult",
    "build_supernet",
    "client_dataset",
    "evaluate_subnet",
    "load_data",
    "load_digits",
    "load_fashion_mnist",
    "load_subnet_arrays",
    "local_supernet",
    "make_loader",
    "scratch_supernet",
    "set_identity_bn",
    "subnet_arrays",
    "supernet_arrays",
    "train_subnet",
]

NUM_CLASSES = 10

DATASETS = ("digits", "fashion-mnist")
"""The data sets a run can train on (run config ``dataset``): scikit-learn's bundled 8×8 ``"digits"``
(offline, the default) and ``"fashion-mnist"`` (28×28, prepared under ``data-root`` with
``python -m ws_core.data fashion-mnist --root data``; ``train-size`` draws a stratified subset)."""

BN_MODES = ("federated", "frozen")
"""How BatchNorm takes part in federated training (run config ``bn-mode``):

* ``"federated"`` (default; SuperFedNAS with ``--use_bn``): BN trains normally; γ, β and the running
  statistics are averaged like every other weight, and SubNets are BN-recalibrated on a few batches
  before evaluation.
* ``"frozen"`` (SuperFedNAS's default, without ``--use_bn``): every BN layer is an identity — γ = 1,
  β = 0, running mean 0, running variance 1 — set by the server before round 1 and by each client on
  receipt; clients keep BN in eval mode and do not train γ / β, so no running statistics are collected,
  the aggregate of the (identical) BN entries is the identity again, and SubNets are evaluated without
  recalibration (SuperFedNAS: ``fedml_api/standalone/superfednas/Client/ClientTrainer/subnet_trainer.py``).
  Not the default here: the ws-core SuperNets are initialised for BN, and with identity BN the signal of
  ``ws_ofa_mbv3_035_32`` shrinks ~10⁸-fold through its stages, so SGD stays at chance.
"""


@dataclass(frozen=True)
class DataSplits:
    """Stratified train / validation / test splits as ``TensorDataset(images [N,1,S,S], labels [N])``."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset


DigitsSplits = DataSplits
"""The former name of :class:`DataSplits` (the digits were the only data set)."""


def load_digits(image_size: int = 8, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2
                ) -> DigitsSplits:
    """The bundled digits data set (no download), standardised, resized to ``image_size`` if not 8.

    Args:
        image_size: side of the square images (bilinear resize from 8×8).
        seed: seeds the stratified split (``ws_core.data.stratified_split``).
        val_fraction / test_fraction: shares held out for validation (search, BN recalibration) and test.

    The images are standardised with the training split's mean and standard deviation (at 8×8, before
    any resize). The splits are built once per process and argument set (a ClientApp is called every
    round); treat their tensors as read-only.
    """
    check_fraction("val_fraction", val_fraction)
    check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}")
    check_image_size(image_size)
    return _load_digits(image_size, int(seed), float(val_fraction), float(test_fraction))


@functools.lru_cache(maxsize=4)
def _load_digits(image_size: int, seed: int, val_fraction: float, test_fraction: float) -> DigitsSplits:
    x, y = ws_data.load_digits(8, channels=1)
    rest, test = ws_data.stratified_split(y, test_fraction, seed=seed)
    train, val = (rest[i] for i in ws_data.stratified_split(y[rest], val_fraction / (1 - test_fraction), seed=seed))
    mean, std = x[train].mean(), x[train].std()
    x = ws_data.resize_images((x - mean) / std, image_size)

    def part(i: np.ndarray) -> TensorDataset:
        i = torch.as_tensor(np.sort(i))
        return TensorDataset(x[i].contiguous(), y[i].contiguous())

    return DigitsSplits(part(train), part(val), part(test))


def load_fashion_mnist(image_size: int = 28, seed: int = 0, root: str | os.PathLike = "data", train_size: int = 0,
                       val_fraction: float = 0.1, test_size: int = 0) -> DataSplits:
    """Fashion-MNIST from ``root`` (``ws_core.data.load_fashion_mnist``; no download), standardised and
    resized to ``image_size`` if not 28.

    Args:
        image_size: side of the square images (bilinear, antialiased resize from 28×28).
        seed: seeds the stratified subset and splits (``ws_core.data.stratified_split``).
        root: the folder holding ``FashionMNIST/raw`` (``make data`` prepares ``data``).
        train_size: images drawn (stratified) from the training file for training + validation; 0 = all of it.
        val_fraction: share of those held out for validation (search, BN recalibration).
        test_size: images drawn (stratified) from the test file for the test split; 0 = all of it.

    The images (uint8) are scaled to [0, 1] and standardised with the training split's mean and
    standard deviation (at 28×28, before any resize), as :func:`load_digits` does. The splits are
    built once per process and argument set; treat their tensors as read-only.
    """
    check_image_size(image_size)
    check_fraction("val_fraction", val_fraction)
    for name, value in (("train_size", train_size), ("test_size", test_size)):
        if isinstance(value, bool) or not isinstance(value, int) or not (value == 0 or value >= MIN_SUBSET):
            raise ValueError(f"{name} must be 0 (the whole file) or an int >= {MIN_SUBSET}, got {value!r}")
    return _load_fashion_mnist(image_size, int(seed), os.fspath(root), train_size, float(val_fraction), test_size)


MIN_SUBSET = 20
"""The smallest ``train_size`` / ``test_size`` :func:`load_fashion_mnist` accepts (two images per class)."""


def _stratified_subset(y: Tensor, size: int, seed: int, what: str) -> np.ndarray:
    """Sorted indices of a seeded stratified subset of ``size`` items of ``y`` (all of them for 0)."""
    if size == 0 or size == len(y):
        return np.arange(len(y))
    if size > len(y):
        raise ValueError(f"{what} must be at most the {len(y)} images of the file, got {size}")
    return np.sort(ws_data.stratified_split(y, size, seed=seed)[1])


@functools.lru_cache(maxsize=2)
def _load_fashion_mnist(image_size: int, seed: int, root: str, train_size: int, val_fraction: float,
                        test_size: int) -> DataSplits:
    x_pool, y_pool = ws_data.load_fashion_mnist(root, train=True)
    x_test, y_test = ws_data.load_fashion_mnist(root, train=False)
    pool = torch.as_tensor(_stratified_subset(y_pool, train_size, seed, "train_size"))
    x_pool, y_pool = x_pool[pool], y_pool[pool]
    test = torch.as_tensor(_stratified_subset(y_test, test_size, seed, "test_size"))
    x_test, y_test = x_test[test], y_test[test]
    train, val = ws_data.stratified_split(y_pool, val_fraction, seed=seed)
    x_pool, x_test = x_pool.float() / 255.0, x_test.float() / 255.0
    mean, std = x_pool[train].mean(), x_pool[train].std()

    def part(x: Tensor, y: Tensor, i: np.ndarray | None = None) -> TensorDataset:
        if i is not None:
            x, y = x[torch.as_tensor(i)], y[torch.as_tensor(i)]
        x = ws_data.resize_images((x - mean) / std, image_size)
        return TensorDataset(x.contiguous(), y.contiguous())

    return DataSplits(part(x_pool, y_pool, train), part(x_pool, y_pool, val), part(x_test, y_test))


def load_data(cfg: Any) -> DataSplits:
    """The splits a run trains and evaluates on: ``cfg.dataset`` (:data:`DATASETS`) at ``cfg.image_size``,
    split by ``cfg.seed`` (``cfg``: a :class:`~ws_fed.config.FedConfig`, or anything with those fields,
    ``data_root`` and ``train_size``)."""
    dataset = getattr(cfg, "dataset", "digits")
    if dataset == "digits":
        return load_digits(cfg.image_size, seed=cfg.seed)
    if dataset == "fashion-mnist":
        return load_fashion_mnist(cfg.image_size, seed=cfg.seed, root=cfg.data_root, train_size=cfg.train_size)
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def client_dataset(train: Dataset, partition_id: int, num_partitions: int, partitioner: str = "dirichlet",
                   alpha: float = 1.0, seed: int = 0) -> Dataset:
    """The local data set of client ``partition_id``: its part of ``train`` (pure, the same on every node)."""
    if not (isinstance(partition_id, int) and isinstance(num_partitions, int) and 0 <= partition_id < num_partitions):
        raise ValueError(f"partition-id must be an int in [0, num-partitions={num_partitions}), got {partition_id!r}")
    min_size = min(10, len(train) // num_partitions)  # type: ignore[arg-type]
    parts = partition_dataset(train, num_partitions, partitioner, alpha=alpha, seed=seed, min_partition_size=min_size)
    return parts[partition_id]


def build_supernet(model: str = "ws_ofa_mbv3_035_32", image_size: int = 8, num_classes: int = NUM_CLASSES,
                   in_chans: int = 1, seed: int | None = 0, channels_last: bool = False) -> SuperNet:
    """A ws-core SuperNet from timm's registry for ``in_chans``×``image_size``² inputs.

    The SuperNet's ``resolution`` dimension is set to ``(image_size,)``, so ``ws_core.cost.CostModel``
    counts MACs at the input size used. ``seed`` makes the initial weights reproducible without
    touching the global RNG (``None``: draw from it). ``channels_last`` stores the conv weights in
    ``torch.channels_last`` memory format (same values; on CPU the depthwise convolutions of the OFA
    MobileNetV3 train ~2× faster that way, see docs/benchmarks.md).
    """
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        net = timm.create_model(model, num_classes=num_classes, in_chans=in_chans, resolutions=(image_size,))
    if not isinstance(net, SuperNet):
        raise ValueError(f"model {model!r} is not a ws-core SuperNet (try timm.list_models('ws_*'))")
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def local_supernet(model: str, image_size: int, seed: int | None, channels_last: bool = False) -> SuperNet:
    """A fresh copy of :func:`build_supernet`'s SuperNet, built once per process (a client's scratch model:
    it only ever reads and trains the slices the server sent)."""
    return copy.deepcopy(_template_supernet(model, image_size, seed, channels_last))


_scratch = threading.local()


def scratch_supernet(model: str, image_size: int, seed: int | None, channels_last: bool = False) -> SuperNet:
    """This thread's reusable copy of :func:`build_supernet`'s SuperNet: a ClientApp's scratch model.

    A client loads the slices the server sent (:func:`load_subnet_arrays`), activates that SubNet and
    trains it; nothing outside those slices is read, so what an earlier round left elsewhere in the
    model cannot change the update (tested), and the per-round copy of the whole SuperNet is saved.
    Use :func:`local_supernet` for a model of your own.
    """
    nets = getattr(_scratch, "nets", None)
    if nets is None:
        nets = _scratch.nets = {}
    key = (model, image_size, seed, channels_last)
    if key not in nets:
        if len(nets) >= 4:
            nets.clear()
        nets[key] = local_supernet(model, image_size, seed, channels_last=channels_last)
    return nets[key]


@functools.lru_cache(maxsize=4)
def _template_supernet(model: str, image_size: int, seed: int | None, channels_last: bool) -> SuperNet:
    return build_supernet(model, image_size, seed=seed, channels_last=channels_last)


def supernet_arrays(net: SuperNet) -> dict[str, np.ndarray]:
    """Every state-dict tensor of ``net`` as a NumPy array (copies)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


def subnet_arrays(net: SuperNet, subnet: Mapping[str, Any] | SubNetConfig) -> dict[str, np.ndarray]:
    """The weight slices SubNet ``subnet`` reads, as contiguous NumPy copies ``{key: array}``."""
    state = net.state_dict()
    return {k: np.array(state[k][s].detach().cpu().numpy(), order="C", copy=True)
            for k, s in net.weight_slices(subnet).items()}


@torch.no_grad()
def load_subnet_arrays(net: SuperNet, subnet: Mapping[str, Any] | SubNetConfig,
                       arrays: Mapping[str, np.ndarray]) -> None:
    """Write SubNet ``subnet``'s slices into ``net`` (checked first: keys, shapes, finite values).

    Raises:
        InvalidSubNetArrays: if ``arrays`` does not match the SubNet; ``net`` is then unchanged.
    """
    slices = net.weight_slices(subnet)
    state = net.state_dict()
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    check_subnet_arrays(arrays, region_shapes({k: state[k] for k in slices}, slices))
    for key, region in slices.items():
        target = state[key]
        target[region].copy_(torch.from_numpy(arrays[key]).to(dtype=target.dtype, device=target.device))


def _batchnorms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def set_identity_bn(net: nn.Module) -> None:
    """Make every BatchNorm layer of ``net`` an identity in eval mode: γ = 1, β = 0, running mean 0,
    running variance 1 (in place; ``bn-mode = "frozen"``). Its output is then ``x / sqrt(1 + eps)``."""
    for bn in _batchnorms(net):
        if bn.affine:
            bn.weight.fill_(1.0)
            bn.bias.fill_(0.0)
        if bn.track_running_stats:
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of local training: mean loss, samples processed (forward + backward) and steps."""

    loss: float
    samples: int
    steps: int


def _device(net: nn.Module, device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else next(net.parameters()).device


def train_subnet(
    net: SuperNet,
    subnet: Mapping[str, Any] | SubNetConfig,
    loader: Iterable,
    *,
    epochs: int = 1,
    max_steps: int = 0,
    lr: float = 0.05,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    max_grad_norm: float = 0.0,
    frozen_bn: bool = False,
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> TrainResult:
    """Train SubNet ``subnet`` of ``net`` in place (SGD, cross-entropy, optional gradient clipping).

    ``frozen_bn``: BatchNorm layers stay in eval mode and their γ / β are not trained, so every BN
    entry (affine and running statistics) leaves training as it came in (SuperFedNAS's default; with
    :func:`set_identity_bn` first, BN is an identity throughout).

    Only the active SubNet runs, so only its elements receive gradients. ``max_steps > 0`` stops after
    that many steps (cycling over ``loader`` if needed) instead of after ``epochs`` epochs. Batches of a
    single sample (the tail of a small partition) are skipped: BN cannot normalise them in training mode.
    ``seed`` fixes the training's own randomness (dropout) without touching the global RNG, so a
    client's update does not depend on what ran before it in the process (``None``: the global RNG).

    Raises:
        FloatingPointError: if the loss becomes non-finite (the update is then useless).
    """
    if epochs < 1 and max_steps < 1:
        raise ValueError(f"train_subnet: need epochs >= 1 or max_steps >= 1, got {epochs} and {max_steps}")
    dev = _device(net, device)
    bns = _batchnorms(net) if frozen_bn else []
    held = [p for bn in bns for p in bn.parameters(recurse=False) if p.requires_grad]
    for p in held:
        p.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    total, samples, steps = 0.0, 0, 0
    modes = {m: m.training for m in net.modules()}
    net.train()
    for bn in bns:
        bn.eval()
    # torch.manual_seed reseeds every CUDA device, so on CUDA all of them are forked (None), not just ``dev``
    rng = torch.random.fork_rng(devices=None if dev.type == "cuda" else [], enabled=seed is not None)
    try:
        with rng, net.subnet(subnet):
            if seed is not None:
                torch.manual_seed(seed)
            epoch = 0
            while True:
                for x, y in loader:
                    if len(y) < 2:  # BN in training mode needs two samples (a partition's last batch)
                        continue
                    x, y = x.to(dev), y.to(dev)
                    loss = F.cross_entropy(net(x), y)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"train_subnet: non-finite loss {loss.item()} at step {steps}")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if max_grad_norm > 0:
                        nn.utils.clip_grad_norm_(params, max_grad_norm)
                    optimizer.step()
                    total += loss.item() * len(y)
                    samples += len(y)
                    steps += 1
                    if max_steps and steps >= max_steps:
                        break
                epoch += 1
                if (max_steps and steps >= max_steps) or (not max_steps and epoch >= epochs) or samples == 0:
                    break
    finally:
        for m, mode in modes.items():
            m.training = mode
        for p in held:
            p.requires_grad_(True)
    if samples == 0:
        raise ValueError("train_subnet: the loader yielded no batches")
    return TrainResult(loss=total / samples, samples=samples, steps=steps)


@dataclass(frozen=True)
class EvalResult:
    """Accuracy (fraction in [0, 1]), mean cross-entropy and number of examples."""

    accuracy: float
    loss: float
    num_examples: int


@torch.no_grad()
def evaluate_subnet(
    net: SuperNet,
    subnet: Mapping[str, Any] | SubNetConfig,
    loader: Iterable,
    *,
    bn_loader: Iterable | None = None,
    bn_batches: int = 4,
    device: torch.device | str | None = None,
) -> EvalResult:
    """Accuracy of SubNet ``subnet``; with ``bn_loader``, its BN statistics are re-estimated first.

    Recalibration writes the SubNet's statistics into ``net`` (its active channels); evaluate on a
    scratch copy of the global model if they must stay untouched.
    """
    dev = _device(net, device)
    if bn_loader is not None:
        recalibrate_bn(net, bn_loader, cfg=subnet, num_batches=bn_batches, device=dev)
    was_training = net.training
    net.eval()
    correct, total, loss = 0, 0, 0.0
    try:
        with net.subnet(subnet):
            for x, y in loader:
                x, y = x.to(dev), y.to(dev)
                logits = net(x)
                loss += F.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(1) == y).sum().item()
                total += len(y)
    finally:
        net.train(was_training)
    if total == 0:
        raise ValueError("evaluate_subnet: the loader yielded no examples")
    return EvalResult(accuracy=correct / total, loss=loss / total if math.isfinite(loss) else math.inf,
                      num_examples=total)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A single-process ``DataLoader`` (seeded shuffling)."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g if shuffle else None)


"""Fashion-MNIST in ws-fed: the run-config keys, the loader's subset, splits and standardisation, and a
federated round on it through the same ClientApp. ``ws_core.data.load_fashion_mnist`` is replaced by
synthetic images (no network, no files)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ws_core import data as ws_data
from ws_fed import FedConfig, InProcessGrid, run_federated
from ws_fed.client_app import app as client_app
from ws_fed.task import DATASETS, _load_fashion_mnist, load_data, load_digits, load_fashion_mnist


def class_images(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` 28×28 uint8 images per class, class ``c`` filled with the value ``10 c`` (ordered by class)."""
    y = torch.arange(10).repeat_interleave(per_class)
    x = (10 * y).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 28, 28).contiguous()
    return x, y


@pytest.fixture
def fake_fmnist(monkeypatch):
    """Fashion-MNIST as 200 training images (20 per class) and 50 test images (5 per class); records the calls."""
    calls = []

    def load(root="data", train=True, image_size=28, download=False, cache_dir=None):
        calls.append((root, train, image_size, download))
        return class_images(20 if train else 5)

    monkeypatch.setattr(ws_data, "load_fashion_mnist", load)
    _load_fashion_mnist.cache_clear()
    yield calls
    _load_fashion_mnist.cache_clear()


def test_subset_splits_are_stratified_and_standardised_on_the_train_split(fake_fmnist):
    splits = load_fashion_mnist(image_size=28, seed=3, root="somewhere", train_size=100)
    assert fake_fmnist == [("somewhere", True, 28, False), ("somewhere", False, 28, False)]  # no download
    # 100 of the 200 training images (10 per class), 10 % of them (1 per class) for validation
    assert torch.equal(splits.train.tensors[1].bincount(), torch.full((10,), 9))
    assert torch.equal(splits.val.tensors[1].bincount(), torch.ones(10, dtype=torch.int64))
    assert torch.equal(splits.test.tensors[1].bincount(), torch.full((10,), 5))        # the whole test file
    assert splits.train.tensors[0].shape == (90, 1, 28, 28) and splits.train.tensors[0].dtype == torch.float32
    # class c is 10c / 255 everywhere; on the balanced train split the mean is 45 / 255 and the sample
    # standard deviation over its N = 90 × 784 pixels sqrt(N / (N - 1) × 825) / 255 (Σ_c (10c − 45)² / 10 = 825)
    n = 90 * 784
    std = math.sqrt(n / (n - 1) * 825)
    for part in (splits.train, splits.val, splits.test):
        x, y = part.tensors
        expected = ((10 * y - 45) / std).float().view(-1, 1, 1, 1).expand_as(x)
        torch.testing.assert_close(x, expected)
    # the subset is ws_core.data.stratified_split's, with the same seed
    _, y_pool = class_images(20)
    subset = np.sort(ws_data.stratified_split(y_pool, 100, seed=3)[1])
    assert len(subset) == 100 and torch.equal(torch.as_tensor(subset).bincount(minlength=200).nonzero().view(-1),
                                              torch.as_tensor(subset))


def test_resize_seed_cache_and_test_subset(fake_fmnist):
    small = load_fashion_mnist(image_size=14, seed=0, train_size=40, test_size=20)
    assert small.train.tensors[0].shape[1:] == (1, 14, 14) and len(small.train) + len(small.val) == 40
    assert torch.equal(small.test.tensors[1].bincount(), torch.full((10,), 2))
    assert load_fashion_mnist(image_size=14, seed=0, train_size=40, test_size=20) is small   # cached per process
    calls = len(fake_fmnist)
    other = load_fashion_mnist(image_size=14, seed=1, train_size=40, test_size=20)
    assert len(fake_fmnist) == calls + 2
    assert other.train.tensors[1].bincount().tolist() == small.train.tensors[1].bincount().tolist()
    whole = load_fashion_mnist(image_size=28, seed=0)
    assert len(whole.train) + len(whole.val) == 200 and len(whole.test) == 50


@pytest.mark.parametrize("kwargs, match", [
    ({"train_size": 10}, r"train_size must be 0 \(the whole file\) or an int >= 20, got 10"),
    ({"train_size": -1}, r"train_size must be 0 \(the whole file\) or an int >= 20, got -1"),
    ({"test_size": 2.5}, r"test_size must be 0 \(the whole file\) or an int >= 20, got 2.5"),
    ({"train_size": 201}, "train_size must be at most the 200 images of the file, got 201"),
    ({"image_size": 0}, "image_size must be an integer >= 1, got 0"),
    ({"val_fraction": 1.0}, r"val_fraction must be in \(0, 1\), got 1.0"),
])
def test_loader_rejects_bad_values(fake_fmnist, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_fashion_mnist(**kwargs)


def test_run_config_keys_round_trip_and_are_checked():
    cfg = FedConfig.from_run_config({"dataset": "fashion-mnist", "data-root": "/d", "train-size": 3000,
                                     "image-size": 14})
    assert (cfg.dataset, cfg.data_root, cfg.train_size, cfg.image_size) == ("fashion-mnist", "/d", 3000, 14)
    assert FedConfig.from_run_config(cfg.to_run_config()) == cfg
    assert (FedConfig().dataset, FedConfig().data_root, FedConfig().train_size) == ("digits", "data", 0)
    assert DATASETS == ("digits", "fashion-mnist")
    for run_config, match in [
        ({"dataset": "mnist"}, "'dataset' must be 'digits' or 'fashion-mnist', got 'mnist'"),
        ({"dataset": "fashion-mnist", "train-size": 5}, r"'train-size' must be 0 \(the whole training file\) "
                                                        "or an int >= 20, got 5"),
        ({"dataset": "fashion-mnist", "train-size": True}, "'train-size' must be 0 .*, got True"),
        ({"train-size": 100}, "'train-size' must be 0 with dataset 'digits' .*, got 100"),
        ({"data-root": ""}, "'data-root' must be a path .*, got ''"),
    ]:
        with pytest.raises(ValueError, match=match):
            FedConfig.from_run_config(run_config)


def test_load_data_picks_the_data_set(fake_fmnist):
    assert load_data(FedConfig(image_size=8, seed=0)) is load_digits(8, seed=0)
    fm = load_data(FedConfig(dataset="fashion-mnist", data_root="r", train_size=100, image_size=8, seed=2))
    assert fm is load_fashion_mnist(8, seed=2, root="r", train_size=100)
    assert fake_fmnist[0][0] == "r"


def test_federated_round_on_fashion_mnist_through_the_client_app(fake_fmnist):
    cfg = FedConfig(dataset="fashion-mnist", train_size=100, image_size=8, num_server_rounds=1, local_steps=1,
                    batch_size=16, min_train_nodes=3, min_available_nodes=3)
    with InProcessGrid(client_app, num_nodes=3, run_config=cfg.to_run_config()) as grid:
        run = run_federated(grid, cfg)
    (cost,) = run.strategy.costs
    assert cost.accepted == 3 and cost.client_macs > 0
    assert len(fake_fmnist) == 2                       # the clients share the process's cached splits


def test_specialise_scores_on_the_data_set_the_checkpoint_was_trained_on(fake_fmnist, tmp_path, capsys):
    from ws_core.checkpoint import save_checkpoint
    from ws_fed.cli import main
    from ws_fed.task import build_supernet

    ckpt = tmp_path / "supernet.safetensors"
    save_checkpoint(build_supernet("ws_ofa_mbv3_035_32", 8, seed=0), ckpt,
                    extra={"model": "ws_ofa_mbv3_035_32", "image_size": 8, "dataset": "fashion-mnist",
                           "data_root": "elsewhere", "train_size": 100})
    assert main(["specialise", str(ckpt), "--macs", "2e6", "--population", "2", "--generations", "0",
                 "--bn-batches", "1", "--data-root", "fmnist-root"]) == 0
    assert "| macs<=2M |" in capsys.readouterr().out
    assert {call[0] for call in fake_fmnist} == {"fmnist-root"}  # Fashion-MNIST, from the folder given

"""The plain-PyTorch task: data, SubNet slices in and out, local training, evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ws_core import data as ws_data
from ws_fed.payload import InvalidSubNetArrays
from ws_fed.task import (
    build_supernet,
    client_dataset,
    evaluate_subnet,
    load_digits,
    load_subnet_arrays,
    local_supernet,
    make_loader,
    subnet_arrays,
    supernet_arrays,
    train_subnet,
)


def test_digits_splits(digits):
    n = len(digits.train) + len(digits.val) + len(digits.test)
    assert n == 1797
    assert digits.train.tensors[0].shape[1:] == (1, 8, 8)
    assert abs(len(digits.test) - 0.2 * n) <= 1 and abs(len(digits.val) - 0.1 * n) <= 1
    for split in (digits.train, digits.val, digits.test):
        assert set(split.tensors[1].tolist()) == set(range(10))  # stratified
    big = load_digits(image_size=16, seed=0)
    assert big.test.tensors[0].shape[1:] == (1, 16, 16)
    with pytest.raises(ValueError, match="image_size must be an integer >= 1, got 0"):
        load_digits(image_size=0)
    with pytest.raises(ValueError, match=r"val_fraction \+ test_fraction must be below 1, got 0.5 \+ 0.5"):
        load_digits(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\), got 0"):
        load_digits(test_fraction=0)


def test_digits_come_from_ws_core_with_its_split():
    x, y = ws_data.load_digits(8)
    rest, test = ws_data.stratified_split(y, 0.2, seed=5)
    train, val = (rest[i] for i in ws_data.stratified_split(y[rest], 0.1 / 0.8, seed=5))
    mean, std = x[train].mean(), x[train].std()
    splits = load_digits(image_size=8, seed=5)
    for part, idx in ((splits.train, train), (splits.val, val), (splits.test, test)):
        assert torch.equal(part.tensors[0], (x[idx] - mean) / std) and torch.equal(part.tensors[1], y[idx])


def test_client_datasets_are_disjoint(digits):
    parts = [client_dataset(digits.train, i, 4, "dirichlet", alpha=1.0, seed=0) for i in range(4)]
    idx = np.concatenate([p.indices for p in parts])
    assert len(idx) == len(digits.train) == len(set(idx.tolist()))
    with pytest.raises(ValueError, match=r"partition-id must be an int in \[0, num-partitions=4\), got 4"):
        client_dataset(digits.train, 4, 4)


def test_supernet_resolution_matches_image_size(net):
    assert net.space["resolution"].choices == (8,)
    assert net.stem.conv.conv.in_channels == 1


def test_slices_round_trip_and_bad_payload_leaves_net_unchanged(net):
    cfg = net.space.sample(torch.Generator().manual_seed(0))
    arrays = subnet_arrays(net, cfg)
    assert set(arrays) == set(net.weight_slices(cfg))
    before = supernet_arrays(net)
    load_subnet_arrays(net, cfg, {k: v + 1 if v.dtype.kind == "f" else v for k, v in arrays.items()})
    after = subnet_arrays(net, cfg)
    key = "stem.conv.conv.weight"
    np.testing.assert_allclose(after[key], arrays[key] + 1, rtol=1e-6)

    bad = dict(after)
    bad[key] = np.zeros((1, 1))
    snapshot = supernet_arrays(net)
    with pytest.raises(InvalidSubNetArrays, match="expected shape"):
        load_subnet_arrays(net, cfg, bad)
    for k, v in supernet_arrays(net).items():
        np.testing.assert_array_equal(v, snapshot[k])
    assert not np.array_equal(snapshot[key], before[key])


def test_training_touches_only_the_subnet_and_learns(net, digits):
    cfg = net.space.min()
    slices = net.weight_slices(cfg)
    before = supernet_arrays(net)
    loader = make_loader(digits.train, 64, shuffle=True, seed=0)
    result = train_subnet(net, cfg, loader, max_steps=6, lr=0.05, momentum=0.9, max_grad_norm=10.0)
    assert result.steps == 6 and result.samples == 6 * 64 and np.isfinite(result.loss)
    after = supernet_arrays(net)
    changed_outside = 0
    for key, old in before.items():
        mask = np.zeros(old.shape, dtype=bool)
        if key in slices:
            mask[slices[key]] = True
        changed_outside += int((after[key][~mask] != old[~mask]).sum())
    assert changed_outside == 0
    assert not np.array_equal(after["stem.conv.conv.weight"], before["stem.conv.conv.weight"])
    # a few more steps reduce the loss on these batches
    later = train_subnet(net, cfg, loader, max_steps=12, lr=0.05, momentum=0.9, max_grad_norm=10.0)
    assert later.loss < result.loss
    acc = evaluate_subnet(net, cfg, make_loader(digits.test, 256, shuffle=False),
                          bn_loader=make_loader(digits.val, 64, shuffle=False), bn_batches=2)
    assert 0.0 <= acc.accuracy <= 1.0 and acc.num_examples == len(digits.test)
    assert acc.accuracy > 0.2   # well above chance (0.1) after 18 steps


def test_train_subnet_bad_arguments(net, digits):
    with pytest.raises(ValueError, match="need epochs >= 1 or max_steps >= 1"):
        train_subnet(net, net.space.min(), make_loader(digits.val, 8, shuffle=False), epochs=0)
    with pytest.raises(ValueError, match="yielded no batches"):
        train_subnet(net, net.space.min(), [], epochs=1)


def test_a_single_sample_tail_batch_is_skipped_not_fatal(net, digits):
    # 5 images in batches of 2: the last batch has one image, whose 1×1 feature maps BN cannot normalise
    from torch.utils.data import Subset

    five = Subset(digits.train, range(5))
    result = train_subnet(net, net.space.max(), make_loader(five, 2, shuffle=False), epochs=1, lr=0.01)
    assert result.samples == 4 and result.steps == 2
    with pytest.raises(ValueError, match="yielded no batches"):
        train_subnet(net, net.space.max(), make_loader(Subset(digits.train, [0]), 2, shuffle=False), epochs=1)


def test_seeded_training_ignores_the_global_rng(digits):
    """With ``seed``, dropout draws from a private stream: the update is the same whatever ran before,
    and the global RNG is left where it was. Without it (the control), the global state decides."""
    def step(seed, global_seed):
        net = local_supernet("ws_ofa_mbv3_035_32", 8, seed=0)
        assert net.head.drop.p > 0
        torch.manual_seed(global_seed)
        loader = make_loader(digits.train, 32, shuffle=True, seed=0)  # its own generator: same batches
        train_subnet(net, net.space.max(), loader, max_steps=2, lr=0.05, seed=seed)
        return subnet_arrays(net, net.space.max())["head.classifier.weight"], torch.rand(1)

    (a, after_a), (b, _) = step(7, global_seed=1), step(7, global_seed=2)
    np.testing.assert_array_equal(a, b)
    assert torch.equal(after_a, torch.rand(1, generator=torch.Generator().manual_seed(1)))
    assert not np.array_equal(step(8, global_seed=1)[0], a)         # the seed matters
    assert not np.array_equal(step(None, 1)[0], step(None, 2)[0])  # control: unseeded follows the global RNG


def test_channels_last_client_computes_the_same_step(digits):
    """The memory format is a speed choice only: same outputs, and the same SGD step up to rounding.

    (Only one step is compared: BN on the 1×1 maps of the last stages amplifies rounding
    differences, so longer runs drift apart in either format alike.)
    """
    x = digits.train.tensors[0][:32]
    nets = [local_supernet("ws_ofa_mbv3_035_32", 8, seed=0, channels_last=cl) for cl in (False, True)]
    subnet = nets[0].space.max()
    for net in nets:
        net.head.drop.p = 0.0  # dropout draws from the global RNG
    with torch.no_grad(), nets[0].subnet(subnet), nets[1].subnet(subnet):
        for net in nets:
            net.eval()
        torch.testing.assert_close(nets[1](x), nets[0](x), rtol=1e-4, atol=1e-5)
        assert nets[1].stem(x).is_contiguous(memory_format=torch.channels_last)
        assert not nets[1].stem(x).is_contiguous()
    results = []
    for net in nets:
        train_subnet(net, subnet, make_loader(digits.train, 32, shuffle=True, seed=0), max_steps=1, lr=0.05,
                     momentum=0.9)
        results.append(subnet_arrays(net, subnet))
    for key, plain in results[0].items():
        np.testing.assert_allclose(results[1][key], plain, atol=1e-3, err_msg=key)
    assert not np.array_equal(results[0]["stem.conv.conv.weight"],
                              build_supernet("ws_ofa_mbv3_035_32", 8, seed=0).stem.conv.conv.weight.detach().numpy())


def test_local_supernet_is_a_fresh_copy_each_time():
    a = local_supernet("ws_ofa_mbv3_035_32", 8, seed=0)
    b = local_supernet("ws_ofa_mbv3_035_32", 8, seed=0)
    with torch.no_grad():
        a.stem.conv.conv.weight.add_(1.0)
    assert not torch.equal(a.stem.conv.conv.weight, b.stem.conv.conv.weight)
    fresh = build_supernet("ws_ofa_mbv3_035_32", 8, seed=0)
    torch.testing.assert_close(b.stem.conv.conv.weight, fresh.stem.conv.conv.weight)

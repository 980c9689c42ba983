"""Overlap-aware aggregation and the MaxNet weights, on hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ws_fed.aggregation import SubNetUpdate, aggregate_overlapping, maxnet_beta, maxnet_weights, round_lr


def upd(arrays, slices, weight=1.0):
    return SubNetUpdate({k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}, slices, weight)


def test_each_element_averages_exactly_the_clients_that_contain_it():
    old = {"w": np.full(4, 9.0, dtype=np.float32)}
    a = upd({"w": [1.0, 1.0]}, {"w": (slice(0, 2),)}, weight=3.0)   # elements 0, 1
    b = upd({"w": [5.0, 5.0, 5.0]}, {"w": (slice(0, 3),)}, weight=1.0)  # elements 0, 1, 2
    new = aggregate_overlapping(old, [a, b])["w"]
    # elements 0, 1: (3*1 + 1*5) / 4 = 2; element 2: only b -> 5; element 3: nobody -> keeps 9
    np.testing.assert_array_equal(new, np.array([2.0, 2.0, 5.0, 9.0], dtype=np.float32))
    assert new.dtype == np.float32
    np.testing.assert_array_equal(old["w"], np.full(4, 9.0))  # input untouched


def test_two_dimensional_leading_and_centre_regions():
    old = {"k": np.zeros((2, 3, 3))}
    centre = upd({"k": np.full((1, 1, 1), 4.0)}, {"k": (slice(0, 1), slice(1, 2), slice(1, 2))}, weight=1.0)
    full = upd({"k": np.full((2, 3, 3), 1.0)}, {"k": (slice(0, 2), slice(0, 3), slice(0, 3))}, weight=1.0)
    new = aggregate_overlapping(old, [centre, full])["k"]
    assert new[0, 1, 1] == pytest.approx(2.5)   # (4 + 1) / 2
    assert new[0, 0, 0] == 1.0 and new[1, 1, 1] == 1.0
    assert new.sum() == pytest.approx(2.5 + 17 * 1.0)


def test_skipped_keys_and_zero_weights_keep_old_values():
    old = {"a": np.array([1.0, 2.0]), "b": np.array([7.0])}
    only_a = upd({"a": [10.0, 20.0]}, {"a": (slice(0, 2),)}, weight=1.0)
    zero = upd({"a": [100.0, 100.0], "b": [100.0]}, {"a": (slice(0, 2),), "b": (slice(0, 1),)}, weight=0.0)
    new = aggregate_overlapping(old, [only_a, zero])
    np.testing.assert_array_equal(new["a"], [10.0, 20.0])
    np.testing.assert_array_equal(new["b"], [7.0])  # only a weight-0 client touched it


def test_integer_and_scalar_tensors_are_rounded_back():
    old = {"n": np.array(3, dtype=np.int64)}
    new = aggregate_overlapping(old, [upd({"n": 5}, {"n": ()}), upd({"n": 8}, {"n": ()})])["n"]
    assert isinstance(new, np.ndarray) and new.shape == () and new.dtype == np.int64
    assert int(new) == 6  # round(6.5) to even


def test_no_updates_is_a_copy():
    old = {"w": np.arange(3.0)}
    new = aggregate_overlapping(old, [])
    np.testing.assert_array_equal(new["w"], old["w"])
    assert new["w"] is not old["w"]


@pytest.mark.parametrize("bad, match", [
    (upd({"x": [1.0]}, {"x": (slice(0, 1),)}), "unknown key 'x'"),
    (upd({"w": [1.0, 2.0]}, {"w": (slice(0, 1),)}), r"shape \(2,\), its region has shape \(1,\)"),
    (upd({"w": [1.0]}, {"w": (slice(0, 1),)}, weight=-1.0), "weight must be a finite number >= 0"),
    (upd({"w": [1.0]}, {"w": (slice(0, 1),)}, weight=math.nan), "weight must be a finite number >= 0"),
    (SubNetUpdate({"w": np.ones(1)}, {}), "same keys"),
])
def test_bad_updates_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        aggregate_overlapping({"w": np.zeros(3)}, [bad])


def test_real_supernet_slices_match_a_masked_reference(net):
    """On the tiny SuperNet's own weight slices, compare with a mask-by-mask reference computation."""
    import torch

    state = {k: v.numpy().astype(np.float64) for k, v in net.state_dict().items() if v.dtype.is_floating_point}
    g = torch.Generator().manual_seed(1)
    cfgs = [net.space.max(), net.space.min(), net.space.sample(g)]
    weights = [0.6, 0.25, 0.15]
    rng = np.random.default_rng(0)
    updates = []
    for cfg, w in zip(cfgs, weights):
        slices = {k: s for k, s in net.weight_slices(cfg).items() if k in state}
        updates.append(SubNetUpdate({k: rng.normal(size=state[k][s].shape) for k, s in slices.items()}, slices, w))
    new = aggregate_overlapping(state, updates)
    for key in ["stem.conv.conv.weight", "stages.0.blocks.0.conv_dw.weight", "stages.4.blocks.3.conv_pw.weight",
                "head.classifier.weight"]:
        num, den = np.zeros_like(state[key]), np.zeros_like(state[key])
        for u in updates:
            if key in u.arrays:
                mask = np.zeros(state[key].shape, dtype=bool)
                mask[u.slices[key]] = True
                full = np.zeros_like(state[key])
                full[u.slices[key]] = u.arrays[key]
                num += np.where(mask, u.weight * full, 0.0)
                den += np.where(mask, u.weight, 0.0)
        expected = np.where(den > 0, num / np.where(den > 0, den, 1.0), state[key])
        np.testing.assert_allclose(new[key], expected, rtol=1e-12)
    # the max net's block 3 of stage 4 exists only in the max net (min and most samples skip it)
    assert "stages.4.blocks.3.conv_pw.weight" not in updates[1].arrays


def test_maxnet_beta_cosine_endpoints_and_midpoint():
    assert maxnet_beta(1, 10, 0.9, 0.1) == pytest.approx(0.9)
    assert maxnet_beta(6, 10, 0.9, 0.1) == pytest.approx(0.5)       # cos(pi/2) = 0: mean of the ends
    assert maxnet_beta(11, 10, 0.9, 0.1) == pytest.approx(0.1)
    assert maxnet_beta(500, 10, 0.9, 0.1) == pytest.approx(0.1)      # stays at beta_final after T
    # t = 2.5 of T = 10: 0.9 * [(1 - 1/9) * 0.5 * (1 + cos(pi/4)) + 1/9]
    expected = 0.9 * ((8 / 9) * 0.5 * (1 + math.cos(math.pi / 4)) + 1 / 9)
    assert maxnet_beta(3, 8, 0.9, 0.1) == pytest.approx(expected)


def test_maxnet_beta_linear_and_constant():
    assert maxnet_beta(6, 10, 0.9, 0.1, schedule="linear") == pytest.approx(0.5)
    assert maxnet_beta(3, 10, 0.9, 0.1, schedule="linear") == pytest.approx(0.9 - 0.8 * 0.2)
    assert maxnet_beta(7, 10, 0.9, 0.1, schedule="constant") == 0.9


@pytest.mark.parametrize("kwargs, match", [
    (dict(server_round=0, decay_rounds=10), "server_round"),
    (dict(server_round=1, decay_rounds=0), "decay_rounds"),
    (dict(server_round=1, decay_rounds=5, beta_initial=0.0), r"beta_initial must be in \(0, 1\]"),
    (dict(server_round=1, decay_rounds=5, beta_final=1.5), r"beta_final must be in \[0, 1\], got 1.5"),
    (dict(server_round=1, decay_rounds=5, schedule="step"), "schedule must be one of"),
])
def test_maxnet_beta_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        maxnet_beta(**kwargs)


def test_round_lr_cosine_linear_constant_hand_computed():
    # T = 10 rounds: round r trains at progress (r - 1) / 10, as CosineAnnealingLR steps once per epoch
    assert round_lr(1, 10, 0.1) == pytest.approx(0.1)
    assert round_lr(6, 10, 0.1) == pytest.approx(0.05)                            # cos(pi/2) = 0
    assert round_lr(10, 10, 0.1) == pytest.approx(0.05 * (1 + math.cos(0.9 * math.pi)))  # 0.00245: still trains
    assert round_lr(10, 10, 0.1) > 0
    assert round_lr(3, 10, 0.1, lr_final=0.02) == pytest.approx(0.02 + 0.08 * 0.5 * (1 + math.cos(0.2 * math.pi)))
    assert round_lr(11, 10, 0.1, lr_final=0.02) == pytest.approx(0.02)             # after T: lr_final
    assert round_lr(3, 10, 0.1, schedule="linear") == pytest.approx(0.08)
    assert round_lr(9, 10, 0.1, schedule="constant") == 0.1
    assert round_lr(1, 1, 0.1) == 0.1


@pytest.mark.parametrize("kwargs, match", [
    (dict(server_round=0, num_rounds=10, lr=0.1), "server_round"),
    (dict(server_round=1, num_rounds=0, lr=0.1), "num_rounds"),
    (dict(server_round=1, num_rounds=5, lr=0.0), "lr must be a number > 0, got 0.0"),
    (dict(server_round=1, num_rounds=5, lr=0.1, lr_final=0.2), r"lr_final must be a number in \[0, lr=0.1\], got 0.2"),
    (dict(server_round=1, num_rounds=5, lr=0.1, schedule="step"), "schedule must be one of"),
])
def test_round_lr_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        round_lr(**kwargs)


def test_maxnet_weights_hand_computed():
    assert maxnet_weights([True, False, False], 0.5) == pytest.approx([0.5, 0.25, 0.25])
    assert maxnet_weights([False, True, True, False], 0.6) == pytest.approx([0.2, 0.3, 0.3, 0.2])
    assert maxnet_weights([True, True], 0.9) == pytest.approx([0.5, 0.5])          # all max: uniform
    assert maxnet_weights([False, False, False], 0.9) == pytest.approx([1 / 3] * 3)  # max net missing: uniform
    # with examples: (0.5, 0.25, 0.25) * (10, 30, 60) / 100
    assert maxnet_weights([True, False, False], 0.5, [10, 30, 60]) == pytest.approx([0.05, 0.075, 0.15])
    assert maxnet_weights([], 0.5) == []


def test_maxnet_weights_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]"):
        maxnet_weights([True, False], 1.5)
    with pytest.raises(ValueError, match="num_examples has 1 entries for 2 clients"):
        maxnet_weights([True, False], 0.5, [3])
    with pytest.raises(ValueError, match="not all zero"):
        maxnet_weights([True, False], 0.5, [0, 0])

"""Tracking-sandwich and static SubNet assignment."""

from __future__ import annotations

import pytest
import torch

from ws_fed.sandwich import StaticSubNet, TrackingSandwich, tracking_sandwich


@pytest.fixture
def space(net):
    return net.space


def test_least_recent_max_and_min_clients_get_max_and_min(space):
    clients = [10, 11, 12, 13]
    max_counts = {10: 3, 11: 1, 12: 2, 13: 1}   # 11 and 13 tie at 1 -> 11 (listed first) gets the max net
    min_counts = {10: 0, 12: 5, 13: 2}          # among 10, 12, 13: client 10 trained the min net least
    plan = tracking_sandwich(clients, space, max_counts, min_counts, generator=torch.Generator().manual_seed(0))
    assert plan[11] == space.max()
    assert plan[10] == space.min()
    for c in (12, 13):
        assert plan[c] not in (space.max(), space.min())
        assert space.validate(plan[c]) == plan[c]
    assert list(plan) == clients


def test_top_and_bottom_k(space):
    plan = tracking_sandwich([1, 2, 3, 4, 5], space, {}, {}, top_k_maxnet=2, bottom_k_minnet=2,
                             generator=torch.Generator().manual_seed(0))
    assert [plan[c] == space.max() for c in (1, 2, 3, 4, 5)] == [True, True, False, False, False]
    assert [plan[c] == space.min() for c in (1, 2, 3, 4, 5)] == [False, False, True, True, False]


def test_small_rounds_fill_max_first(space):
    assert tracking_sandwich([7], space, {}, {})[7] == space.max()
    two = tracking_sandwich([7, 8], space, {7: 1}, {})
    assert two[8] == space.max() and two[7] == space.min()


def test_random_subnets_are_seeded(space):
    a = tracking_sandwich(list(range(6)), space, {}, {}, generator=torch.Generator().manual_seed(3))
    b = tracking_sandwich(list(range(6)), space, {}, {}, generator=torch.Generator().manual_seed(3))
    c = tracking_sandwich(list(range(6)), space, {}, {}, generator=torch.Generator().manual_seed(4))
    assert a == b and a != c


def test_counters_rotate_the_max_and_min_nets_over_clients(space):
    ts = TrackingSandwich(space)
    g = torch.Generator().manual_seed(0)
    got_max, got_min = [], []
    for _ in range(3):
        plan = ts.assign([1, 2, 3], g)
        got_max += [c for c, cfg in plan.items() if cfg == space.max()]
        got_min += [c for c, cfg in plan.items() if cfg == space.min()]
    assert got_max == [1, 2, 3]   # each client trains the max net once in three rounds
    # min net among the others: round 1 {2, 3} tie -> 2; round 2 {1, 3} tie -> 1; round 3 {1, 2}: both once -> 1
    assert got_min == [2, 1, 1]
    assert ts.max_counts == {1: 1, 2: 1, 3: 1}
    restored = TrackingSandwich(space)
    restored.load_state_dict(ts.state_dict())
    assert restored.max_counts == ts.max_counts and restored.min_counts == ts.min_counts


def test_bad_arguments(space):
    with pytest.raises(ValueError, match="top_k_maxnet must be an int >= 0, got -1"):
        TrackingSandwich(space, top_k_maxnet=-1)
    with pytest.raises(ValueError, match="clients must be distinct"):
        tracking_sandwich([1, 1], space, {}, {})
    with pytest.raises(TypeError, match="SearchSpace"):
        TrackingSandwich({"depth": [2]})


def test_static_assignment(space):
    cfg = space.min()
    static = StaticSubNet(space, cfg.to_dict())
    assert static.assign([4, 5]) == {4: cfg, 5: cfg}
    with pytest.raises(ValueError, match="dimension"):
        StaticSubNet(space, {**cfg.to_dict(), "resolution": 33})

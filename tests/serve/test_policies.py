"""Policies on a hand-written profile; every expected decision is worked out in the comments.

Profile (accuracy ascending; latency in ms at batch 1..4):
    s0: 70%  [1, 2, 3, 4]
    s1: 75%  [2, 4, 6, 8]
    s2: 80%  [4, 8, 12, 16]
"""

from __future__ import annotations

import pytest

from ws_serve.policies import (
    Decision,
    FixedSubNet,
    MaxAcc,
    MaxBatch,
    MinCost,
    QueueState,
    SlackFit,
    make_policy,
    slackfit_buckets,
)
from ws_serve.profile import Profile

P = Profile(("s0", "s1", "s2"), (70.0, 75.0, 80.0), ((1, 2, 3, 4), (2, 4, 6, 8), (4, 8, 12, 16)))


def q(slack_ms: float, length: int = 10, now: float = 0.0) -> QueueState:
    return QueueState(now=now, head_deadline=now + slack_ms / 1e3, length=length)


def test_slackfit_buckets_hand_computed():
    # 16 buckets from min L(s,1) = 1 to max L(s,4) = 16 ms: edges 1, 2, ..., 16
    edges, entries = slackfit_buckets(P, 16)
    assert edges == pytest.approx(tuple(range(1, 17)))
    # edge 1: only (s0,1) fits.  edge 2: (s0,2) has the largest batch.  edge 4: (s0,4)
    # edge 8: batch 4 fits for s0 (4) and s1 (8) -> higher accuracy s1.  edge 12: s2 reaches only b=3 -> (s1,4)
    # edge 16: (s2,4)
    assert entries[0] == Decision(0, 1)
    assert entries[1] == Decision(0, 2)
    assert entries[3] == Decision(0, 4)
    assert entries[7] == Decision(1, 4)
    assert entries[11] == Decision(1, 4)
    assert entries[15] == Decision(2, 4)
    with pytest.raises(ValueError, match="num_buckets"):
        slackfit_buckets(P, 1)


def test_slackfit_online_rule():
    policy = SlackFit(P, num_buckets=16)
    assert policy.decide(q(9.5)) == Decision(1, 4)    # highest edge <= 9.5 is 9 -> (s1, 4)
    assert policy.decide(q(9.5, length=3)) == Decision(1, 3)  # batch capped by the queue
    assert policy.decide(q(16.0)) == Decision(2, 4)   # exactly on the last edge
    assert policy.decide(q(100.0)) == Decision(2, 4)  # beyond the last edge
    assert policy.decide(q(2.0)) == Decision(0, 2)    # exactly on an edge
    assert policy.decide(q(1.99)) == Decision(0, 1)
    assert policy.fastest_ms() == 1.0
    # slack below the fastest option: best effort = cheapest SubNet at the largest batch
    assert policy.decide(q(0.5, length=3)) == Decision(0, 3)
    assert policy.decide(q(-5.0, length=10)) == Decision(0, 4)


def test_maxbatch_hand_computed():
    policy = MaxBatch(P)
    # slack 9.5: largest b with L(s0, b) <= 9.5 is 4; most accurate s with L(s, 4) <= 9.5 is s1 (8 ms)
    assert policy.decide(q(9.5)) == Decision(1, 4)
    # slack 5: b = 4 (L(s0,4) = 4); only s0 serves 4 in 5 ms
    assert policy.decide(q(5.0)) == Decision(0, 4)
    # slack 2.5: b = 2; L(s1, 2) = 4 > 2.5 -> s0
    assert policy.decide(q(2.5, length=1)) == Decision(0, 1)
    assert policy.decide(q(16.0)) == Decision(2, 4)


def test_maxacc_hand_computed():
    policy = MaxAcc(P)
    # slack 9.5: most accurate s with L(s,1) <= 9.5 is s2 (4 ms); largest b with L(s2,b) <= 9.5 is 2
    assert policy.decide(q(9.5)) == Decision(2, 2)
    # slack 3: s1 (L = 2); b = 1 (L(s1, 2) = 4 > 3)
    assert policy.decide(q(3.0)) == Decision(1, 1)
    assert policy.decide(q(13.0, length=1)) == Decision(2, 1)


def test_fixed_and_mincost_hand_computed():
    fixed = FixedSubNet(P, 1)
    assert fixed.fastest_ms() == 2.0
    assert fixed.decide(q(6.5)) == Decision(1, 3)     # L(s1, 3) = 6 <= 6.5 < 8
    assert fixed.decide(q(6.5, length=2)) == Decision(1, 2)
    assert fixed.decide(q(1.5, length=9)) == Decision(1, 4)   # late: best effort, its own SubNet
    assert FixedSubNet(P, "s2").decide(q(9.0)) == Decision(2, 2)
    mincost = MinCost(P)
    assert mincost.decide(q(3.5)) == Decision(0, 3)
    assert mincost.decide(q(50.0)) == Decision(0, 4)
    with pytest.raises(ValueError, match="subnet must be in"):
        FixedSubNet(P, 3)
    with pytest.raises(KeyError, match="no SubNet"):
        FixedSubNet(P, "nope")


def test_mincost_picks_the_cheapest_even_if_not_first():
    p = Profile(("a", "b"), (70.0, 71.0), ((3.0, 5.0), (2.0, 3.0)))  # the more accurate one is cheaper
    assert MinCost(p).decide(q(10.0)) == Decision(1, 2)


def test_decide_is_pure_and_validates():
    policy = SlackFit(P, num_buckets=16)
    state = q(9.5)
    assert [policy.decide(state) for _ in range(3)] == [Decision(1, 4)] * 3
    with pytest.raises(ValueError, match=">= 1 query"):
        policy.decide(q(9.5, length=0))
    with pytest.raises(TypeError, match="Profile"):
        SlackFit({"not": "a profile"})  # type: ignore[arg-type]


def test_make_policy():
    assert isinstance(make_policy("slackfit", P, num_buckets=8), SlackFit)
    fixed = make_policy("fixed:2", P)
    assert isinstance(fixed, FixedSubNet) and fixed.subnet == 2
    assert make_policy("fixed:s1", P).subnet == 1
    numeric = Profile(("123456789012", "x"), (1.0, 2.0), ((1.0,), (2.0,)))  # an all-digit SubNet id
    assert make_policy("fixed:123456789012", numeric).subnet == 0
    assert make_policy("fixed:1", numeric).subnet == 1
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("fastest", P)
    with pytest.raises(ValueError, match="takes no"):
        make_policy("maxacc:1", P)


def test_flat_profile_has_one_bucket_value():
    p = Profile(("a",), (1.0,), ((5.0, 5.0),))
    policy = SlackFit(p, num_buckets=4)
    assert policy.decide(q(5.0)) == Decision(0, 2)
    assert policy.decide(q(4.0, length=5)) == Decision(0, 2)  # late: best effort

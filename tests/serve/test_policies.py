"""Policies on a hand-written profile; every expected decision is worked out in the comments.

Profile (accuracy ascending; latency in ms at batch 1..4):
    s0: 70%  [1, 2, 3, 4]
    s1: 75%  [2, 4, 6, 8]
    s2: 80%  [4, 8, 12, 16]
"""

from __future__ import annotations

import math
import random

import pytest

from ws_serve.policies import (
    Decision,
    FixedSubNet,
    MaxAcc,
    MaxBatch,
    MinCost,
    QueueState,
    SlackFit,
    SlackFitPaper,
    make_policy,
    slackfit_buckets,
)
from ws_serve.profile import Profile, superserve_paper_profile

P = Profile(("s0", "s1", "s2"), (70.0, 75.0, 80.0), ((1, 2, 3, 4), (2, 4, 6, 8), (4, 8, 12, 16)))


def q(slack_ms: float, length: int = 10, now: float = 0.0, workers: int = 1, cost: float = 0.0) -> QueueState:
    return QueueState(now=now, head_deadline=now + slack_ms / 1e3, length=length, workers=workers,
                      query_cost_ms=cost)


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


def test_slackfit_paper_online_rule():
    policy = SlackFitPaper(P, num_buckets=16)
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
    policy = SlackFit(P)
    state = q(9.5)
    assert [policy.decide(state) for _ in range(3)] == [Decision(0, 4)] * 3
    with pytest.raises(ValueError, match=">= 1 query"):
        policy.decide(q(9.5, length=0))
    with pytest.raises(TypeError, match="Profile"):
        SlackFit({"not": "a profile"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Profile"):
        SlackFitPaper({"not": "a profile"})  # type: ignore[arg-type]


def test_make_policy():
    assert type(make_policy("slackfit", P)) is SlackFit
    paper = make_policy("slackfit-paper", P, num_buckets=8)
    assert type(paper) is SlackFitPaper and paper.describe() == "slackfit-paper(buckets=8)"
    assert make_policy("slackfit", P).describe() == "slackfit"
    fixed = make_policy("fixed:2", P)
    assert isinstance(fixed, FixedSubNet) and fixed.subnet == 2
    assert make_policy("fixed:s1", P).subnet == 1
    numeric = Profile(("123456789012", "x"), (1.0, 2.0), ((1.0,), (2.0,)))  # an all-digit SubNet id
    assert make_policy("fixed:123456789012", numeric).subnet == 0
    assert make_policy("fixed:1", numeric).subnet == 1
    with pytest.raises(ValueError, match=r"unknown policy 'fastest'; allowed .*'slackfit', 'slackfit-paper'"):
        make_policy("fastest", P)
    with pytest.raises(ValueError, match="takes no"):
        make_policy("maxacc:1", P)


def test_flat_profile_has_one_bucket_value():
    p = Profile(("a",), (1.0,), ((5.0, 5.0),))
    policy = SlackFitPaper(p, num_buckets=4)
    assert policy.decide(q(5.0)) == Decision(0, 2)
    assert policy.decide(q(4.0, length=5)) == Decision(0, 2)  # late: best effort


def test_slackfit_hand_computed():
    # fastest latency per batch size, min_s L(s, b): 1, 2, 3, 4 ms (s0)
    policy = SlackFit(P)
    assert policy.fastest_ms() == 1.0
    # slack 9.5, 10 queued -> b <= 4; batch 4 fits (s0: 4 ms). Draining 10 at batch 4 takes 3 batches: 3.17 ms
    # each, which no SubNet meets at batch 4 -> the fastest there, (s0, 4)
    assert policy.decide(q(9.5, length=10)) == Decision(0, 4)
    # ... with 3 workers one round drains it: the whole slack for the batch; s1 takes 8 <= 9.5, s2 16 -> (s1, 4)
    assert policy.decide(q(9.5, length=10, workers=3)) == Decision(1, 4)
    # 8 queued, slack 16: 2 batches of 4, 8 ms each -> s1 (8 ms); with 2 workers one round -> s2 (16 ms)
    assert policy.decide(q(16.0, length=8)) == Decision(1, 4)
    assert policy.decide(q(16.0, length=8, workers=2)) == Decision(2, 4)
    # 3 queued: batch 3; s0 3, s1 6, s2 12 -> (s1, 3)
    assert policy.decide(q(9.5, length=3)) == Decision(1, 3)
    # 2 queued: batch 2; s2 takes 8 <= 9.5 -> (s2, 2)
    assert policy.decide(q(9.5, length=2)) == Decision(2, 2)
    # 1 queued: batch 1; s2 takes 4 -> (s2, 1).  SlackFitPaper gives (s1, 1): its bucket (edge 9) holds (s1, 4)
    assert policy.decide(q(9.5, length=1)) == Decision(2, 1)
    assert SlackFitPaper(P, num_buckets=16).decide(q(9.5, length=1)) == Decision(1, 1)
    # slack 3.5, 4 queued: batch 4 needs 4 ms > 3.5 -> batch 3, only s0 (3 ms; 2 batches: 1.75 each) -> (s0, 3)
    assert policy.decide(q(3.5, length=4)) == Decision(0, 3)
    # exactly on a latency: L(s2, 1) = 4 fits 4.0, not 3.99 (then s1: 2 ms)
    assert policy.decide(q(4.0, length=1)) == Decision(2, 1)
    assert policy.decide(q(3.99, length=1)) == Decision(1, 1)
    # slack 1: only (s0, 1), whatever the queue
    assert policy.decide(q(1.0, length=5)) == Decision(0, 1)
    # slack 16, 100 queued: 25 batches, 0.64 ms each -> drained as fast as possible, (s0, 4)
    assert policy.decide(q(16.0, length=100)) == Decision(0, 4)
    assert policy.decide(q(100.0, length=4)) == Decision(2, 4)
    # late (slack below 1 ms): best effort = the largest batch the queue allows, on the SubNet fastest there
    assert policy.decide(q(0.5, length=3)) == Decision(0, 3)
    assert policy.decide(q(-5.0, length=10)) == Decision(0, 4)


def test_slackfit_charges_the_backlog_its_handling_cost():
    policy = SlackFit(P)
    # 2 queued, slack 9.5: batch 2; s2 takes 8 ms. With 0.5 ms per query 8.5 ms is left: s2 still fits
    assert policy.decide(q(9.5, length=2, cost=0.5)) == Decision(2, 2)
    # with 1 ms per query 7.5 ms is left: s1 (4 ms)
    assert policy.decide(q(9.5, length=2, cost=1.0)) == Decision(1, 2)
    # 8 queued, slack 16, 2 batches of 4: without cost 8 ms each -> s1; with 0.5 ms per query
    # (16 - 4) / 2 = 6 ms each -> s0 (4 ms), as s1 needs 8
    assert policy.decide(q(16.0, length=8)) == Decision(1, 4)
    assert policy.decide(q(16.0, length=8, cost=0.5)) == Decision(0, 4)
    # handling alone eats the slack (8 × 2.5 = 20 > 16): drained as fast as possible
    assert policy.decide(q(16.0, length=8, cost=2.5)) == Decision(0, 4)
    # the batch size still follows the forward alone: the largest batch that fits the slack
    assert policy.decide(q(3.5, length=4, cost=10.0)).batch_size == 3
    # the paper's rule and the fixed baselines ignore it
    assert SlackFitPaper(P, num_buckets=16).decide(q(9.5, length=1, cost=5.0)) == \
        SlackFitPaper(P, num_buckets=16).decide(q(9.5, length=1))


def test_slackfit_ties_go_to_the_cheaper_subnet():
    # b and c are equally accurate; c is cheaper at every batch size
    p = Profile(("a", "b", "c"), (70.0, 75.0, 75.0), ((1.0, 2.0), (3.0, 6.0), (2.0, 5.0)))
    policy = SlackFit(p)
    assert policy.decide(q(6.0, length=2)) == Decision(2, 2)   # batch 2: a 2, b 6, c 5 all fit -> c
    assert policy.decide(q(3.0, length=1)) == Decision(2, 1)   # batch 1: a 1, b 3, c 2 all fit -> c
    assert policy.decide(q(2.5, length=2)) == Decision(0, 2)   # batch 2: only a (2 ms)


def test_slackfit_with_latency_not_monotone_in_batch():
    # min_s L(s, b) = 1, 5, 3: no binary search over batch sizes; the largest fitting batch is still found
    p = Profile(("a",), (70.0,), ((1.0, 5.0, 3.0),))
    policy = SlackFit(p)
    assert policy.decide(q(4.0, length=3)) == Decision(0, 3)
    assert policy.decide(q(4.0, length=2)) == Decision(0, 1)


def test_slackfit_paper_example():
    # SuperServe profile, one queued query with 20 ms of slack: the 80.16% SubNet (8.4 ms at batch 1)
    p = superserve_paper_profile()
    d = SlackFit(p).decide(q(20.0, length=1))
    assert d == Decision(p.num_subnets - 1, 1)
    assert p.accuracies[d.subnet] == pytest.approx(80.16) and p.latency(d.subnet, 1) == pytest.approx(8.397)
    # the paper's rule as printed gives the 76.58% SubNet: its bucket is chosen for a batch larger than 1
    paper = SlackFitPaper(p).decide(q(20.0, length=1))
    assert paper == Decision(10, 1) and p.accuracies[paper.subnet] == pytest.approx(76.577)
    # 40 queued on 8 workers: one round of batch 16 drains them; the most accurate SubNet that serves
    # 16 within 20 ms: index 10 (18.98 ms; index 11 takes 20.1)
    assert SlackFit(p).decide(q(20.0, length=40, workers=8)) == Decision(10, 16)
    assert p.latency(10, 16) <= 20.0 < p.latency(11, 16)
    # ... on one worker: 3 batches, 6.7 ms each, which no SubNet serves at 16 (the fastest takes 10.7 ms):
    # the fastest, to drain the backlog before the head's deadline passes
    assert SlackFit(p).decide(q(20.0, length=40)) == Decision(0, 16)


def _reference(p: Profile, state: QueueState) -> Decision:
    """The rule by exhaustive search: the largest batch some SubNet serves within the slack; then, with
    r = ceil(queued / (batch * workers)), max (accuracy, -latency, -index) over the SubNets serving that
    batch within slack / r, else the fastest at that batch."""
    n = min(state.length, p.max_batch)
    batches = [b for s in range(p.num_subnets) for b in range(1, n + 1) if p.latency(s, b) <= state.slack_ms]
    if not batches:
        return Decision(min(range(p.num_subnets), key=lambda s: (p.latency(s, n), -p.accuracies[s], s)), n)
    b = max(batches)
    share = state.slack_ms / math.ceil(state.length / (b * state.workers))
    fits = [(p.accuracies[s], -p.latency(s, b), -s) for s in range(p.num_subnets) if p.latency(s, b) <= share]
    if not fits:
        return Decision(min(range(p.num_subnets), key=lambda s: (p.latency(s, b), -p.accuracies[s], s)), b)
    return Decision(-max(fits)[2], b)


def test_slackfit_matches_an_exhaustive_search():
    rng = random.Random(0)
    for _ in range(200):
        subnets, batches = rng.randint(1, 6), rng.randint(1, 6)
        accs = sorted(rng.choice((70.0, 72.0, 75.0, 80.0)) for _ in range(subnets))
        rows = tuple(tuple(float(rng.randint(1, 20)) for _ in range(batches)) for _ in range(subnets))
        p = Profile(tuple(f"s{i}" for i in range(subnets)), tuple(accs), rows)
        policy = SlackFit(p)
        for _ in range(20):
            state = q(rng.choice((rng.uniform(-2, 25), float(rng.randint(0, 21)))), length=rng.randint(1, 20),
                      workers=rng.randint(1, 3))
            assert policy.decide(state) == _reference(p, state), (rows, accs, state)

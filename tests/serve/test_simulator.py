from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ws_serve.policies import FixedSubNet, MaxAcc, MinCost, SlackFit, SlackFitPaper
from ws_serve.profile import Profile, superserve_paper_profile
from ws_serve.simulator import simulate
from ws_serve.traces import bursty_trace

# one SubNet, 10 ms per batch whatever its size (up to 4): easy to follow by hand
FLAT = Profile(("a",), (70.0,), ((10.0, 10.0, 10.0, 10.0),))
TWO = Profile(("lo", "hi"), (70.0, 80.0), ((2.0, 3.0, 4.0, 5.0), (10.0, 20.0, 30.0, 40.0)))


def test_single_worker_hand_computed():
    # arrivals at 0, 1, 2, 3 ms; SLO 25 ms. t=0: q0 alone -> batch [q0], done at 10 ms.
    # t=10: q1..q3 wait -> one batch of 3, done at 20 ms: q1 (deadline 26), q2 (27), q3 (28) all in time.
    r = simulate([0.0, 0.001, 0.002, 0.003], FixedSubNet(FLAT, 0), num_workers=1, slo_ms=25)
    assert (r.met_slo, r.served_late, r.dropped, r.batches) == (4, 0, 0, 2)
    assert r.slo_attainment == 1.0 and r.mean_accuracy == 70.0 and r.mean_batch == 2.0
    # SLO 15 ms: q1..q3 have deadlines 16..18 ms; at t=10 the slack of q1 is 6 ms < 10 ms -> all dropped
    r = simulate([0.0, 0.001, 0.002, 0.003], FixedSubNet(FLAT, 0), num_workers=1, slo_ms=15)
    assert (r.met_slo, r.dropped) == (1, 3)
    # with late="serve" they run best effort and finish at 20 ms: late, not dropped
    r = simulate([0.0, 0.001, 0.002, 0.003], FixedSubNet(FLAT, 0), num_workers=1, slo_ms=15, late="serve")
    assert (r.met_slo, r.served_late, r.dropped) == (1, 3, 0)


def test_two_workers_and_the_policy_choice():
    # SlackFitPaper, edges 2, 3, ..., 40 ms. Slack 30: the largest batch under 30 ms is 4, only lo serves 4 in
    # time (hi needs 40) -> lo, even for a single query. Slack 40: (hi, 4) fits -> hi.
    r = simulate([0.0], SlackFitPaper(TWO, num_buckets=39), num_workers=2, slo_ms=30)
    assert r.subnet_queries == {"lo": 1} and r.mean_accuracy == 70.0
    r = simulate([0.0], SlackFitPaper(TWO, num_buckets=39), num_workers=2, slo_ms=40)
    assert r.subnet_queries == {"hi": 1} and r.mean_accuracy == 80.0
    # SlackFit sees one queued query: batch 1, and hi serves it in 10 <= 30 ms
    r = simulate([0.0], SlackFit(TWO), num_workers=2, slo_ms=30)
    assert r.subnet_queries == {"hi": 1} and r.mean_accuracy == 80.0
    # four queries at t=0 on one worker, SLO 30 (work-conserving): q0 is alone when it arrives -> (hi, 1),
    # done at 10 ms. Then q1..q3 have 20 ms of slack: batch 3 -> lo takes 4 ms, hi 30 -> (lo, 3)
    r = simulate([0.0] * 4, SlackFit(TWO), num_workers=1, slo_ms=30)
    assert r.subnet_queries == {"hi": 1, "lo": 3} and r.batches == 2 and r.met_slo == 4
    # MinCost always uses lo. Work-conserving: q0 starts alone at once, q1 and q2 then run as one batch
    r = simulate([0.0, 0.0, 0.0], MinCost(TWO), num_workers=1, slo_ms=30)
    assert r.subnet_queries == {"lo": 3} and r.met_slo == 3 and r.batches == 2


def test_dispatch_overhead_is_taken_from_the_slack():
    # one query, SLO 10 ms: hi takes 10 ms at batch 1 and fits exactly; with 1 ms of dispatch overhead the
    # slack is 9 ms and only lo (2 ms) fits. The batch then ends at 1 + 2 = 3 ms, in time.
    assert simulate([0.0], SlackFit(TWO), num_workers=1, slo_ms=10).subnet_queries == {"hi": 1}
    r = simulate([0.0], SlackFit(TWO), num_workers=1, slo_ms=10, overhead_ms=1.0)
    assert r.subnet_queries == {"lo": 1} and r.met_slo == 1


class CostBlindSlackFit(SlackFit):
    """SlackFit that is not told what handling a query costs."""

    def decide(self, queue):
        return super().decide(dataclasses.replace(queue, query_cost_ms=0.0))


def test_query_handling_cost_is_spent_by_the_worker_and_charged_by_slackfit():
    # one query, SLO 12 ms, 3 ms of handling per query: hi would end at 10 + 3 = 13 ms, late. SlackFit leaves
    # 12 - 3 = 9 ms to the forward -> lo, done at 2 + 3 = 5 ms; the blind rule picks hi and misses
    r = simulate([0.0], SlackFit(TWO), num_workers=1, slo_ms=12, query_cost_ms=3.0)
    assert r.subnet_queries == {"lo": 1} and r.met_slo == 1 and r.busy_time_s == pytest.approx(0.005)
    r = simulate([0.0], CostBlindSlackFit(TWO), num_workers=1, slo_ms=12, query_cost_ms=3.0)
    assert r.subnet_queries == {"hi": 1} and r.served_late == 1 and r.busy_time_s == pytest.approx(0.013)
    # a batch of 3 costs 3 × 3 ms of handling: three queries at t=0, SLO 40 -> q0 alone on hi (13 ms), then
    # q1, q2 with 27 ms of slack: batch 2, 27 - 6 = 21 >= hi's 20 -> hi, done at 13 + 20 + 6 = 39 ms
    r = simulate([0.0] * 3, SlackFit(TWO), num_workers=1, slo_ms=40, query_cost_ms=3.0)
    assert r.subnet_queries == {"hi": 3} and r.met_slo == 3 and r.busy_time_s == pytest.approx(0.039)
    with pytest.raises(ValueError, match="query_cost_ms must be >= 0, got -1"):
        simulate([0.0], SlackFit(TWO), query_cost_ms=-1)


def test_slackfit_charging_handling_cost_holds_bursts_the_blind_rule_misses():
    """Paper profile, 2 workers, 0.5 ms of handling per query, 600 q/s bursty (CV² 8), SLO 36 ms."""
    p = superserve_paper_profile()
    trace = bursty_trace(150, 450, 8, duration_s=3, seed=0)
    aware = simulate(trace, SlackFit(p), 2, 36, query_cost_ms=0.5)
    blind = simulate(trace, CostBlindSlackFit(p), 2, 36, query_cost_ms=0.5)
    most = simulate(trace, FixedSubNet(p, p.num_subnets - 1), 2, 36, query_cost_ms=0.5)
    assert aware.slo_attainment >= 0.9 and aware.slo_attainment > blind.slo_attainment + 0.2
    assert blind.slo_attainment < most.slo_attainment + 0.2  # blind to the backlog, it serves like the max
    assert aware.mean_accuracy > p.accuracies[0] + 2


def test_bounded_queue_rejects():
    r = simulate(np.zeros(10), FixedSubNet(FLAT, 0), num_workers=1, slo_ms=1000, max_queue=3)
    # q0 goes straight to the worker (the queue is drained as it fills), then 3 wait, 6 are rejected
    assert r.rejected == 6 and r.met_slo == 4
    assert r.met_slo + r.served_late + r.dropped + r.rejected + r.unserved == r.queries


def test_worker_failure_requeues_the_batch():
    # two workers; both busy at t=0 (one query each); worker dies at 5 ms: its query is retried
    r = simulate([0.0, 0.0], FixedSubNet(FLAT, 0), num_workers=2, slo_ms=100, worker_failures=[0.005])
    assert r.retried == 1 and r.met_slo == 2
    # every worker dies: the rest is unserved, and counted
    r = simulate([0.0, 0.02, 0.03], FixedSubNet(FLAT, 0), num_workers=1, slo_ms=100, worker_failures=[0.005])
    assert r.met_slo == 0 and r.unserved == 3


def test_validation():
    with pytest.raises(ValueError, match="late"):
        simulate([0.0], MinCost(FLAT), late="maybe")
    with pytest.raises(ValueError, match="sorted"):
        simulate([1.0, 0.0], MinCost(FLAT))
    with pytest.raises(ValueError, match="num_workers"):
        simulate([0.0], MinCost(FLAT), num_workers=0)


def test_paper_scale_slackfit_holds_where_accurate_fixed_subnets_collapse():
    """A short version of the benchmark: 8 workers, ~7000 q/s bursty (CV² 8), SLO 36 ms."""
    p = superserve_paper_profile()
    trace = bursty_trace(1500, 5550, 8, duration_s=3, seed=0)
    slack = simulate(trace, SlackFit(p), 8, 36)
    paper = simulate(trace, SlackFitPaper(p), 8, 36)
    fixed = simulate(trace, FixedSubNet(p, 14), 8, 36)  # a fixed SubNet more accurate than SlackFit's mean
    mincost = simulate(trace, MinCost(p), 8, 36)
    maxacc = simulate(trace, MaxAcc(p), 8, 36)
    assert slack.slo_attainment >= 0.99 and paper.slo_attainment >= 0.99
    assert fixed.slo_attainment < 0.9 and maxacc.slo_attainment < 0.9
    assert slack.mean_accuracy > mincost.mean_accuracy + 2

"""Router behaviour with scripted workers (no model): EDF order, batching, overload, deadlines, faults."""

from __future__ import annotations

import asyncio

import pytest
import torch

from ws_serve.metrics import ServeMetrics
from ws_serve.policies import FixedSubNet, MaxAcc
from ws_serve.profile import Profile
from ws_serve.runtime import (
    DeadlineExceeded,
    InferenceFailed,
    NoWorkers,
    Overloaded,
    Router,
    ShuttingDown,
    Worker,
    WorkerDied,
    WorkerFailed,
)

# fast enough that policies always have slack at the SLOs used below
PROFILE = Profile(("small", "big"), (70.0, 80.0), ((1.0, 1.0, 1.0, 1.0), (2.0, 2.0, 2.0, 2.0)))


class ScriptedWorker(Worker):
    """Records batches; waits on ``gate`` if set; dies or raises on request."""

    def __init__(self, name="w", gate=None, die_on_call=None, raise_on_call=None):
        super().__init__(name)
        self.gate = gate
        self.batches: list[tuple[str, list[float]]] = []
        self.die_on_call = die_on_call
        self.raise_on_call = raise_on_call

    async def infer(self, x, subnet):
        call = len(self.batches)
        self.batches.append((subnet, x[:, 0].tolist()))
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        if call == self.die_on_call:
            self.alive = False
            raise WorkerDied(f"{self.name} crashed")
        if call == self.raise_on_call:
            raise RuntimeError("bad kernel")
        return x * 2


def q(value: float, n: int = 1) -> torch.Tensor:
    return torch.full((n, 3), float(value))


def run(coro):
    return asyncio.run(coro)


def outcomes(metrics: ServeMetrics) -> dict[str, float]:
    return {s.labels["outcome"]: s.value for m in metrics.requests.collect() for s in m.samples
            if s.name.endswith("_total")}


def test_edf_order_and_batching():
    async def main():
        gate = asyncio.Event()
        w = ScriptedWorker(gate=gate)
        router = Router([w], FixedSubNet(PROFILE, 0), max_queue=100)
        await router.start()
        first = router.submit(q(0), slo_ms=1000)       # goes straight to the idle worker
        later = [router.submit(q(v), slo_ms=slo) for v, slo in [(1, 900), (2, 300), (3, 600), (4, 200), (5, 800)]]
        assert router.queue_length == 5
        gate.set()
        results = await asyncio.gather(first, *later)
        await router.stop()
        return w.batches, results

    batches, results = run(main())
    # the second batch takes the 4 earliest deadlines (batch <= 4): SLO 200, 300, 600, 800 -> values 4, 2, 3, 5
    assert batches[0] == ("small", [0.0])
    assert batches[1] == ("small", [4.0, 2.0, 3.0, 5.0])
    assert batches[2] == ("small", [1.0])
    for v, r in zip([0, 1, 2, 3, 4, 5], results):
        assert r.outputs.tolist() == [[2.0 * v] * 3]  # each query gets its own rows back
        assert r.subnet == "small" and r.accuracy == 70.0
    assert results[2].batch_size == 4


def test_policy_sees_the_queue_workers_and_handling_cost():
    seen = []

    class Recording(FixedSubNet):
        def decide(self, queue):
            seen.append(queue)
            return super().decide(queue)

    async def main():
        gate = asyncio.Event()
        workers = [ScriptedWorker("a", gate=gate), ScriptedWorker("b", gate=gate)]
        router = Router(workers, Recording(PROFILE, 0), overhead_ms=2.0, query_cost_ms=0.25)
        await router.start()
        futures = [router.submit(q(v), slo_ms=1000) for v in range(3)]
        gate.set()
        await asyncio.gather(*futures)
        await router.stop()

    run(main())
    assert [s.length for s in seen][:2] == [1, 1]  # each idle worker takes the query that arrives
    assert all(s.workers == 2 and s.query_cost_ms == 0.25 for s in seen)
    assert all(0 < s.slack_ms <= 998.0 for s in seen)  # the dispatch overhead is taken from the slack


def test_multi_sample_requests_keep_their_rows():
    async def main():
        gate = asyncio.Event()
        w = ScriptedWorker(gate=gate)
        router = Router([w], MaxAcc(PROFILE))
        await router.start()
        a = router.submit(q(1, n=2), slo_ms=500)
        b = router.submit(q(2, n=3), slo_ms=500)
        c = router.submit(q(3, n=1), slo_ms=500)
        gate.set()
        return await asyncio.gather(a, b, c), w.batches

    (a, b, c), batches = run(main())
    assert a.outputs.shape == (2, 3) and b.outputs.shape == (3, 3) and c.outputs.shape == (1, 3)
    assert b.outputs.eq(4).all() and c.outputs.eq(6).all()
    # MaxAcc with 500 ms slack picks "big" and up to 4 queries: b (3 rows) + c (1 row)
    assert batches[1] == ("big", [2.0, 2.0, 2.0, 3.0])


def test_overload_is_rejected_at_once_and_counted():
    async def main():
        gate = asyncio.Event()
        router = Router([ScriptedWorker(gate=gate)], FixedSubNet(PROFILE, 0), max_queue=2)
        await router.start()
        futures = [router.submit(q(0), 1000)]  # dispatched
        futures += [router.submit(q(i), 1000) for i in (1, 2)]  # queued: the queue is now full
        with pytest.raises(Overloaded, match="queue full"):
            router.submit(q(3), 1000)
        gate.set()
        await asyncio.gather(*futures)
        return router.metrics

    counts = outcomes(run(main()))
    assert counts["ok"] == 3 and counts["overloaded"] == 1


def test_queries_that_cannot_meet_their_deadline_get_an_explicit_error():
    async def main():
        gate = asyncio.Event()
        router = Router([ScriptedWorker(gate=gate)], FixedSubNet(PROFILE, 0))
        await router.start()
        running = router.submit(q(0), 1000)
        doomed = router.submit(q(1), 5)  # 5 ms SLO, but the worker is busy for longer
        await asyncio.sleep(0.02)
        gate.set()
        await running
        with pytest.raises(DeadlineExceeded, match="SLO of 5 ms"):
            await doomed
        return router.metrics

    counts = outcomes(run(main()))
    assert counts["deadline_exceeded"] == 1 and counts["ok"] == 1


def test_dead_worker_is_removed_and_its_batch_retried():
    async def main():
        a = ScriptedWorker("a", die_on_call=0)
        b = ScriptedWorker("b")
        router = Router([a, b], FixedSubNet(PROFILE, 0))
        await router.start()
        results = await asyncio.gather(*(router.submit(q(i), 1000) for i in range(3)))
        return router, a, b, results

    router, a, b, results = run(main())
    assert [r.outputs[0, 0].item() for r in results] == [0.0, 2.0, 4.0]
    assert all(r.worker == "b" for r in results)
    assert not a.alive and router.alive_workers() == [b]
    assert router.metrics.workers_alive._value.get() == 1


def test_retries_are_bounded():
    async def main():
        a = ScriptedWorker("a", die_on_call=0)
        b = ScriptedWorker("b")
        router = Router([a, b], FixedSubNet(PROFILE, 0), max_retries=0)
        await router.start()
        f1 = router.submit(q(1), 1000)  # runs on b (the last idle worker is taken first)
        f2 = router.submit(q(2), 1000)  # runs on a, which dies: no retry allowed
        return await asyncio.gather(f1, f2, return_exceptions=True), router

    (r1, r2), router = run(main())
    assert r1.outputs[0, 0].item() == 2.0
    assert isinstance(r2, WorkerFailed) and "worker a died" in str(r2)
    assert router.ready and [w.name for w in router.alive_workers()] == ["b"]


def test_last_worker_dying_fails_the_queue_with_no_workers():
    async def main():
        gate = asyncio.Event()
        a = ScriptedWorker("a", gate=gate, die_on_call=0)
        router = Router([a], FixedSubNet(PROFILE, 0))
        await router.start()
        futures = [router.submit(q(i), 1000) for i in range(3)]
        gate.set()
        return await asyncio.gather(*futures, return_exceptions=True)

    errors = run(main())
    assert all(isinstance(e, NoWorkers) for e in errors)


def test_failed_forward_answers_explicitly_and_keeps_the_worker():
    async def main():
        w = ScriptedWorker(raise_on_call=0)
        router = Router([w], FixedSubNet(PROFILE, 0))
        await router.start()
        with pytest.raises(InferenceFailed, match="bad kernel"):
            await router.submit(q(1), 1000)
        ok = await router.submit(q(2), 1000)
        return ok, router

    ok, router = run(main())
    assert ok.outputs[0, 0].item() == 4.0 and router.ready


def test_every_accepted_request_gets_exactly_one_outcome():
    async def main():
        gate = asyncio.Event()
        workers = [ScriptedWorker("a", gate=gate), ScriptedWorker("b", gate=gate, die_on_call=1)]
        router = Router(workers, MaxAcc(PROFILE), max_queue=5)
        await router.start()
        accepted, rejected = [], 0
        for i in range(60):
            try:
                accepted.append(router.submit(q(i), slo_ms=3 + (i % 7) * 20))
            except Overloaded:
                rejected += 1
            if i % 10 == 9:
                gate.set()
                await asyncio.sleep(0.01)
                gate.clear()
        gate.set()
        results = await asyncio.gather(*accepted, return_exceptions=True)
        await router.stop()
        return results, rejected, router.metrics

    results, rejected, metrics = run(main())
    counts = outcomes(metrics)
    assert rejected > 0 and len(results) + rejected == 60
    assert sum(counts.values()) == 60  # one outcome per request, rejections included
    assert counts["overloaded"] == rejected
    assert counts["ok"] + counts["late"] == sum(not isinstance(r, Exception) for r in results)


def test_stop_fails_queued_requests_and_refuses_new_ones():
    async def main():
        gate = asyncio.Event()
        router = Router([ScriptedWorker(gate=gate)], FixedSubNet(PROFILE, 0))
        await router.start()
        running = router.submit(q(0), 1000)
        queued = router.submit(q(1), 1000)
        stopping = asyncio.create_task(router.stop(grace_s=1.0))
        await asyncio.sleep(0)
        with pytest.raises(ShuttingDown):
            await queued
        with pytest.raises(ShuttingDown):
            router.submit(q(2), 1000)
        gate.set()
        await stopping
        return await running

    assert run(main()).outputs[0, 0].item() == 0.0


def test_timeout_abandons_the_query():
    async def main():
        gate = asyncio.Event()
        w = ScriptedWorker(gate=gate)
        router = Router([w], FixedSubNet(PROFILE, 0))
        await router.start()
        busy = router.submit(q(0), 10_000)
        with pytest.raises(DeadlineExceeded, match="request timeout"):
            await router.infer(q(1), 10_000, timeout_s=0.01)
        gate.set()
        await busy
        await asyncio.sleep(0.01)
        return w.batches

    batches = run(main())
    assert batches == [("small", [0.0])]  # the abandoned query never ran


def test_router_validates_arguments():
    policy = FixedSubNet(PROFILE, 0)
    with pytest.raises(ValueError, match="at least one worker"):
        Router([], policy)
    with pytest.raises(ValueError, match="max_queue"):
        Router([ScriptedWorker()], policy, max_queue=0)
    with pytest.raises(ValueError, match="late"):
        Router([ScriptedWorker()], policy, late="never")
    with pytest.raises(ValueError, match="query_cost_ms must be >= 0, got -1"):
        Router([ScriptedWorker()], policy, query_cost_ms=-1)

"""The serving runtime: workers and the router with one global earliest-deadline-first queue.

Query path (SuperServe Fig. 7): *enqueue → schedule → dispatch → actuate → infer → reply*.

* :class:`Router` admits a query into a bounded EDF queue keyed by its deadline (arrival + SLO) or
  rejects it at once (:class:`Overloaded`). Whenever a worker is idle and the queue is not empty it
  asks the policy for a decision on the queue state, pops that many earliest-deadline queries and
  sends them as one batch to the worker. Every accepted query gets exactly one outcome — its
  logits, or an explicit :class:`DeadlineExceeded`, :class:`WorkerFailed`, :class:`InferenceFailed`,
  :class:`NoWorkers` or :class:`ShuttingDown` error.
* Late queries: with ``late="drop"`` (default) a head query whose slack is below the fastest option
  of the policy is answered with :class:`DeadlineExceeded` instead of occupying a worker.
* Pinned queries: a query submitted with ``subnet`` (the request parameter ``subnet_id``) is served by
  that SubNet, never another; when it heads the queue, :meth:`Policy.decide_pinned` sizes its batch,
  which it shares only with queries naming the same SubNet (or, under an unpinned head, with the
  policy's choice), stepping over at most ``_MAX_SKIPPED`` queries that name others.
* Faults: a worker that raises :class:`WorkerDied` is removed; the queries of its batch go back into
  the queue (``max_retries`` times, then :class:`WorkerFailed`); serving continues on the others.
* :class:`LocalWorker` runs a :class:`~ws_serve.backends.Backend` in its own thread (one per device;
  several CPU workers share one weight copy through :meth:`SubNetAct.replica`).
  :class:`~ws_serve.ray_worker.RayWorker` runs one in a Ray actor.

Everything runs on the event loop of the server; the router needs no locks.
"""

from __future__ import annotations

import abc
import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .backends import Backend
from .metrics import ServeMetrics
from .policies import Policy, QueueState

__all__ = [
    "DeadlineExceeded",
    "InferenceFailed",
    "InferenceResult",
    "LocalWorker",
    "NoWorkers",
    "Overloaded",
    "Router",
    "ServeError",
    "ShuttingDown",
    "Worker",
    "WorkerDied",
    "WorkerFailed",
]


class ServeError(Exception):
    """An explicit failure outcome of a query; ``status`` is the HTTP status it maps to."""

    status = 500
    outcome = "error"


class Overloaded(ServeError):
    """The queue is full: the query was not accepted."""

    status, outcome = 503, "overloaded"


class DeadlineExceeded(ServeError):
    """The query could not be served before its deadline."""

    status, outcome = 504, "deadline_exceeded"


class WorkerFailed(ServeError):
    """The query's batch was lost with a dead worker more often than ``max_retries`` allows."""

    status, outcome = 503, "worker_failed"


class NoWorkers(ServeError):
    """No worker is alive."""

    status, outcome = 503, "worker_failed"


class ShuttingDown(ServeError):
    """The server stopped before the query was served."""

    status, outcome = 503, "shutdown"


class InferenceFailed(ServeError):
    """The forward pass raised."""

    status, outcome = 500, "error"


class WorkerDied(Exception):
    """Raised by a worker that can no longer serve (process gone, device lost, killed)."""


class Worker(abc.ABC):
    """Runs batches for the router; one per device."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.alive = True

    @abc.abstractmethod
    async def infer(self, x: Tensor, subnet: str) -> Tensor:
        """Logits (CPU float tensor) of batch ``x`` through served SubNet ``subnet``; raises
        :class:`WorkerDied` if the worker is gone."""

    async def close(self) -> None:  # noqa: B027
        """Release the worker's resources."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, alive={self.alive})"


class LocalWorker(Worker):
    """A backend run in a dedicated thread of this process.

    :meth:`kill` marks the worker dead (administrative removal or fault injection): a batch in flight
    is lost — as with a crashed device — and the router retries it elsewhere. A CUDA error from the
    device is treated the same way.
    """

    def __init__(self, backend: Backend, name: str = "cpu-0") -> None:
        super().__init__(name)
        self.backend = backend
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ws-serve-{name}")

    async def infer(self, x: Tensor, subnet: str) -> Tensor:
        if not self.alive:
            raise WorkerDied(f"worker {self.name} is dead")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, x, subnet)

    def _run(self, x: Tensor, subnet: str) -> Tensor:
        try:
            out = self.backend(x, subnet).float().cpu()
        except RuntimeError as e:
            if str(e).startswith("CUDA error"):
                self.alive = False
                raise WorkerDied(f"worker {self.name}: {e}") from e
            raise
        if not self.alive:
            raise WorkerDied(f"worker {self.name} died while running a batch")
        return out

    def kill(self) -> None:
        self.alive = False

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class InferenceResult:
    """The answer to one query: ``queue_ms`` is arrival to dispatch, ``compute_ms`` the batch's run on its
    worker (hand-over to the worker thread and back included), ``latency_ms`` arrival to result."""

    outputs: Tensor
    subnet: str
    accuracy: float
    batch_size: int
    worker: str
    slo_ms: float
    queue_ms: float
    latency_ms: float
    compute_ms: float = 0.0

    @property
    def met_slo(self) -> bool:
        return self.latency_ms <= self.slo_ms


@dataclass(order=True)
class _Query:
    deadline: float
    seq: int
    x: Tensor = field(compare=False)
    n: int = field(compare=False)
    arrival: float = field(compare=False)
    slo_ms: float = field(compare=False)
    future: asyncio.Future = field(compare=False)
    attempts: int = field(default=0, compare=False)
    subnet: int | None = field(default=None, compare=False)  # profile index of a pinned SubNet


_MAX_SKIPPED = 256  # queued queries naming other SubNets that one batch may step over


class Router:
    """Global EDF queue + policy + workers (see module docstring).

    Args:
        workers: the workers (at least one).
        policy: the scheduling policy; its profile names the served SubNets.
        max_queue: most queued queries (samples); beyond it new queries get :class:`Overloaded`.
        late: ``"drop"`` or ``"serve"`` (see module docstring).
        max_retries: how often a query lost with a dead worker is re-queued.
        overhead_ms: dispatch overhead the policy should reserve (added to ``now``).
        query_cost_ms: handling time of one queued query outside the forward pass, passed to the policy
            in :attr:`QueueState.query_cost_ms` (SlackFit charges it to draining the backlog).
        metrics: where to record metrics (a fresh :class:`ServeMetrics` by default).
        clock: monotonic clock in seconds.
    """

    def __init__(
        self,
        workers: Sequence[Worker],
        policy: Policy,
        *,
        max_queue: int = 1024,
        late: str = "drop",
        max_retries: int = 1,
        overhead_ms: float = 0.0,
        query_cost_ms: float = 0.0,
        metrics: ServeMetrics | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not workers:
            raise ValueError("Router: needs at least one worker")
        if max_queue < 1:
            raise ValueError(f"Router: max_queue must be >= 1, got {max_queue}")
        if late not in ("drop", "serve"):
            raise ValueError(f"Router: late must be 'drop' or 'serve', got {late!r}")
        if max_retries < 0:
            raise ValueError(f"Router: max_retries must be >= 0, got {max_retries}")
        if overhead_ms < 0:
            raise ValueError(f"Router: overhead_ms must be >= 0, got {overhead_ms}")
        if not query_cost_ms >= 0:
            raise ValueError(f"Router: query_cost_ms must be >= 0, got {query_cost_ms}")
        self.workers = list(workers)
        self.policy = policy
        self.profile = policy.profile
        self.max_queue = max_queue
        self.late = late
        self.max_retries = max_retries
        self.overhead_s = overhead_ms / 1e3
        self.query_cost_ms = float(query_cost_ms)
        self.metrics = metrics if metrics is not None else ServeMetrics()
        self.clock = clock
        self._queue: list[_Query] = []
        self._queued = 0
        self._idle = [w for w in self.workers if w.alive]
        self._inflight: set[asyncio.Task] = set()
        self._seq = itertools.count()
        self._started = False
        self._stopping = False
        self.metrics.workers_alive.set(len(self._idle))

    # State --------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Started, not stopping, and at least one worker alive."""
        return self._started and not self._stopping and any(w.alive for w in self.workers)

    @property
    def queue_length(self) -> int:
        """Queued queries (samples)."""
        return self._queued

    def alive_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.alive]

    async def start(self) -> None:
        self._started = True

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop admitting, fail queued queries with :class:`ShuttingDown`, wait for in-flight batches."""
        self._stopping = True
        while self._queue:
            q = heapq.heappop(self._queue)
            self._finish_error(q, ShuttingDown("server shutting down before the request was served"))
        self._queued = 0
        self.metrics.queue_length.set(0)
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=grace_s)
        for w in self.workers:
            await w.close()

    # Admission ----------------------------------------------------------------------------------
    def submit(self, x: Tensor, slo_ms: float, arrival: float | None = None,
               subnet: int | str | None = None) -> asyncio.Future:
        """Enqueue ``x`` (``[n, ...]``, one query per row) with latency SLO ``slo_ms``; returns a future
        resolving to an :class:`InferenceResult` or raising a :class:`ServeError`.

        ``arrival`` (on :attr:`clock`, default now) is when the request reached the server; the
        deadline is ``arrival + slo_ms``. ``subnet`` (a served SubNet id or profile index) pins the
        SubNet that serves the query; ``None`` leaves the choice to the policy. Raises at once (not
        accepted): :class:`Overloaded`, :class:`NoWorkers`, :class:`ShuttingDown`; ``ValueError`` for a
        SubNet that is not served.
        """
        pin = None if subnet is None else self._subnet_index(subnet)
        if self._stopping:
            self.metrics.finished("shutdown")
            raise ShuttingDown("server is shutting down")
        if not any(w.alive for w in self.workers):
            self.metrics.finished("worker_failed")
            raise NoWorkers("no worker is alive")
        n = int(x.shape[0])
        if self._queued + n > self.max_queue:
            self.metrics.finished("overloaded")
            raise Overloaded(f"queue full ({self._queued} of {self.max_queue} queries waiting); retry later")
        now = self.clock() if arrival is None else arrival
        q = _Query(now + slo_ms / 1e3, next(self._seq), x, n, now, slo_ms,
                   asyncio.get_running_loop().create_future(), subnet=pin)
        heapq.heappush(self._queue, q)
        self._queued += n
        self.metrics.queue_length.set(self._queued)
        self._dispatch()
        return q.future

    async def infer(self, x: Tensor, slo_ms: float, timeout_s: float | None = None,
                    arrival: float | None = None, subnet: int | str | None = None) -> InferenceResult:
        """Submit and wait. ``timeout_s`` bounds the wait; on expiry the query is abandoned and
        :class:`DeadlineExceeded` raised (a result arriving later is discarded)."""
        future = self.submit(x, slo_ms, arrival, subnet)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            if not future.done():
                future.cancel()
                self.metrics.finished("deadline_exceeded")
            raise DeadlineExceeded(f"no result within the server's request timeout of {timeout_s:g} s") from None
        except asyncio.CancelledError:
            future.cancel()  # the client went away: do not run it
            raise

    def _subnet_index(self, subnet: int | str) -> int:
        ids = self.profile.subnet_ids
        if isinstance(subnet, str) and subnet in ids:
            return ids.index(subnet)
        if isinstance(subnet, int) and not isinstance(subnet, bool) and 0 <= subnet < len(ids):
            return subnet
        raise ValueError(f"Router: subnet must be a served SubNet id {list(ids)} or an index in "
                         f"[0, {len(ids)}), got {subnet!r}")

    # Scheduling ---------------------------------------------------------------------------------
    def _pop(self) -> _Query:
        q = heapq.heappop(self._queue)
        self._queued -= q.n
        return q

    def _dispatch(self) -> None:
        fastest = self.policy.fastest_ms() / 1e3
        while self._idle and self._queue:
            now = self.clock()
            while self._queue and self._queue[0].future.done():  # abandoned by its client
                self._pop()
            if self.late == "drop":
                while self._queue and self._queue[0].deadline - now - self.overhead_s < (
                        need := self._fastest_s(self._queue[0], fastest)):
                    q = self._pop()
                    waited = (now - q.arrival) * 1e3
                    self._finish_error(q, DeadlineExceeded(
                        f"deadline exceeded: the request's SLO of {q.slo_ms:g} ms cannot be met any more "
                        f"(queued {waited:.1f} ms; the fastest SubNet needs {need * 1e3:.2f} ms)"))
            if not self._queue:
                break
            head = self._queue[0]
            state = QueueState(now + self.overhead_s, head.deadline, self._queued,
                               sum(w.alive for w in self.workers), self.query_cost_ms)
            decision = (self.policy.decide(state) if head.subnet is None
                        else self.policy.decide_pinned(state, head.subnet))
            batch: list[_Query] = []
            skipped: list[_Query] = []
            size = 0
            while self._queue and (not batch or size + self._queue[0].n <= decision.batch_size):
                q = self._pop()
                if q.future.done():
                    continue
                if q.subnet != decision.subnet and (q.subnet is not None or head.subnet is not None):
                    skipped.append(q)  # served by another SubNet: stays queued
                    if len(skipped) >= _MAX_SKIPPED:
                        break
                    continue
                batch.append(q)
                size += q.n
            for q in skipped:
                heapq.heappush(self._queue, q)
                self._queued += q.n
            if not batch:
                continue
            worker = self._idle.pop()
            task = asyncio.get_running_loop().create_task(self._run(worker, batch, decision.subnet, now))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        self.metrics.queue_length.set(self._queued)

    def _fastest_s(self, q: _Query, fastest: float) -> float:
        """Seconds the fastest option for ``q`` takes: the policy's, or its pinned SubNet's at batch 1."""
        return fastest if q.subnet is None else self.profile.latency(q.subnet, 1) / 1e3

    async def _run(self, worker: Worker, batch: list[_Query], subnet: int, dispatched: float) -> None:
        sid = self.profile.subnet_ids[subnet]
        x = batch[0].x if len(batch) == 1 else torch.cat([q.x for q in batch])
        t0 = self.clock()
        try:
            y = await worker.infer(x, sid)
        except WorkerDied:
            self._remove(worker)
            self._retry(batch, worker)
            self._dispatch()
            return
        except Exception as e:  # a failed forward: answer explicitly, keep the worker
            for q in batch:
                self._finish_error(q, InferenceFailed(f"inference failed on worker {worker.name}: {e!r}"))
            self._idle.append(worker)
            self._dispatch()
            return
        done = self.clock()
        self.metrics.batch(sid, x.shape[0], done - t0)
        accuracy = self.profile.accuracies[subnet]
        start = 0
        for q in batch:
            out = y[start:start + q.n]
            start += q.n
            if q.future.done():
                continue
            latency_ms = (done - q.arrival) * 1e3
            result = InferenceResult(out, sid, accuracy, int(x.shape[0]), worker.name, q.slo_ms,
                                     (dispatched - q.arrival) * 1e3, latency_ms, (done - t0) * 1e3)
            q.future.set_result(result)
            self.metrics.served(sid, latency_ms / 1e3, result.queue_ms / 1e3)
            self.metrics.finished("ok" if done <= q.deadline else "late", accuracy=accuracy)
        if worker.alive:
            self._idle.append(worker)
        else:
            self._remove(worker)
        self._dispatch()

    def _remove(self, worker: Worker) -> None:
        worker.alive = False
        if worker in self._idle:
            self._idle.remove(worker)
        self.metrics.workers_alive.set(len(self.alive_workers()))
        if not self.alive_workers():
            while self._queue:
                self._finish_error(self._pop(), NoWorkers("every worker has died"))
            self.metrics.queue_length.set(0)

    def _retry(self, batch: list[_Query], worker: Worker) -> None:
        alive = bool(self.alive_workers())
        for q in batch:
            q.attempts += 1
            if not alive:
                self._finish_error(q, NoWorkers("every worker has died"))
            elif q.attempts > self.max_retries:
                self._finish_error(q, WorkerFailed(
                    f"worker {worker.name} died while serving the request ({q.attempts} attempts)"))
            else:
                heapq.heappush(self._queue, q)
                self._queued += q.n
        self.metrics.queue_length.set(self._queued)

    def _finish_error(self, q: _Query, error: ServeError) -> None:
        if not q.future.done():
            q.future.set_exception(error)
            self.metrics.finished(error.outcome)

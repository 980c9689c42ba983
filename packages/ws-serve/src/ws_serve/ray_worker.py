"""Workers as Ray actors (``pip install 'ws-serve[ray]'``): scale the router's workers across nodes.

Each :class:`RayWorker` owns one actor that rebuilds the deployment from a
:class:`~ws_serve.deploy.DeploySpec` in its own process (same model, checkpoint, served set and
SubnetNorm statistics) and runs batches with a backend there. An actor that dies (``ray.kill``, a
lost node) raises :class:`~ws_serve.runtime.WorkerDied` to the router, which removes the worker and
retries its batch on the others.

Example::

    >>> import ray                                                       # doctest: +SKIP
    >>> ray.init()
    >>> workers = [RayWorker(dep.spec, dep.model, f"ray-{i}") for i in range(4)]
    >>> app, router = build_app(dep, workers, "slackfit")
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .deploy import DeploySpec
from .runtime import Worker, WorkerDied
from .server import ModelInfo

__all__ = ["RayWorker"]


def _ray():
    try:
        import ray
    except ImportError as e:  # pragma: no cover - exercised only without ray
        raise ImportError("RayWorker needs Ray: pip install 'ws-serve[ray]'") from e
    return ray


@functools.lru_cache(maxsize=1)
def _actor_class():
    ray = _ray()

    @ray.remote
    class SubNetActActor:
        """Holds one SubNetAct deployment and a backend in a Ray worker process."""

        def __init__(self, spec: dict[str, Any], backend: str, sample_shape: list[int], max_batch: int) -> None:
            from .backends import make_backend

            self.act = DeploySpec(**spec).build()
            self.backend = make_backend(backend, self.act)
            self.backend.prepare(sample_shape, range(1, max_batch + 1))

        def ping(self) -> bool:
            return True

        def infer(self, x: np.ndarray, subnet: str) -> np.ndarray:
            return self.backend(torch.from_numpy(np.array(x)), subnet).float().cpu().numpy()

    return SubNetActActor


class RayWorker(Worker):
    """A worker running in a Ray actor (see module docstring).

    Args:
        spec: how to build the deployment in the actor.
        model: the served model's info (input shape, max batch).
        name: worker name.
        backend: backend name inside the actor.
        num_cpus, num_gpus: the actor's Ray resources.
        options: further ``actor.options(...)``.
    """

    def __init__(self, spec: DeploySpec, model: ModelInfo, name: str = "ray-0", backend: str = "eager",
                 num_cpus: float = 1.0, num_gpus: float = 0.0, options: dict[str, Any] | None = None) -> None:
        super().__init__(name)
        ray = _ray()
        self._ray = ray
        opts = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_restarts": 0, **(options or {})}
        self.actor = _actor_class().options(**opts).remote(spec.to_dict(), backend, list(model.sample_shape),
                                                           model.max_batch)
        self._errors = (ray.exceptions.RayActorError,)

    async def wait_ready(self) -> None:
        """Wait until the actor has built its deployment (raises :class:`WorkerDied` if it failed)."""
        try:
            await self.actor.ping.remote()
        except self._errors as e:
            self.alive = False
            raise WorkerDied(f"worker {self.name}: actor failed to start ({e})") from e

    async def infer(self, x: Tensor, subnet: str) -> Tensor:
        if not self.alive:
            raise WorkerDied(f"worker {self.name} is dead")
        try:
            out = await self.actor.infer.remote(x.detach().cpu().numpy(), subnet)
        except self._errors as e:
            self.alive = False
            raise WorkerDied(f"worker {self.name}: actor died ({type(e).__name__})") from e
        return torch.from_numpy(np.array(out))

    def kill(self) -> None:
        """Kill the actor (fault injection / removal)."""
        self._ray.kill(self.actor, no_restart=True)

    async def close(self) -> None:
        if self.alive:
            self._ray.kill(self.actor, no_restart=True)

"""Workers as Ray actors on a local Ray instance (skipped without Ray)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile

import pytest
import torch

ray = pytest.importorskip("ray", reason="needs ray (pip install 'ws-serve[ray]')")

from ws_serve.backends import EagerBackend  # noqa: E402
from ws_serve.deploy import load_supernet  # noqa: E402
from ws_serve.policies import MaxAcc  # noqa: E402
from ws_serve.ray_worker import RayWorker  # noqa: E402
from ws_serve.runtime import LocalWorker, Router  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    temp = tempfile.mkdtemp(prefix="wsray")  # short: Ray puts unix sockets under it
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False, _temp_dir=temp)
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_actor_workers_serve_and_survive_a_killed_actor(local_ray, deployment):
    reference = load_supernet("ws_ofa_mbv3_035_32")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    async def main():
        actor = RayWorker(deployment.spec, deployment.model, "ray-0", num_cpus=0.5)
        await actor.wait_ready()
        workers = [LocalWorker(EagerBackend(deployment.act.replica()), "cpu-0"), actor]
        router = Router(workers, MaxAcc(deployment.profile))
        await router.start()
        first = await router.infer(x, slo_ms=60_000)  # the last idle worker goes first: the actor
        actor.kill()  # the actor process goes away; the router finds out on its next batch
        await asyncio.sleep(0.5)
        later = [await router.infer(x, slo_ms=60_000) for _ in range(3)]
        await router.stop()
        return first, later, router

    first, later, router = asyncio.run(main())
    cfg = next(s.config for s in deployment.served if s.id == first.subnet)
    with torch.no_grad():
        torch.testing.assert_close(first.outputs, reference.extract(cfg).eval()(x), atol=1e-4, rtol=0)
    assert first.worker == "ray-0"
    assert all(r.worker == "cpu-0" for r in later)
    assert [w.name for w in router.alive_workers()] == ["cpu-0"]

"""Requests that name their SubNet (request parameter ``subnet_id``): router, policy and HTTP."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
import torch

from ws_serve.deploy import build_app, load_supernet, make_local_workers
from ws_serve.policies import MaxAcc, QueueState, SlackFit
from ws_serve.profile import Profile
from ws_serve.runtime import DeadlineExceeded, Router, Worker

# three SubNets, batch 1..4; "c" is the most accurate and the slowest
PROFILE = Profile(("a", "b", "c"), (60.0, 70.0, 80.0),
                  ((1.0, 2.0, 3.0, 4.0), (2.0, 4.0, 6.0, 8.0), (50.0, 60.0, 70.0, 80.0)))


class GatedWorker(Worker):
    """Holds every batch until ``release`` is set; keeps (SubNet, first column) of each batch."""

    def __init__(self, release: asyncio.Event) -> None:
        super().__init__("gated")
        self.release = release
        self.seen: list[tuple[str, list[float]]] = []

    async def infer(self, x, subnet):
        self.seen.append((subnet, x[:, 0].tolist()))
        await self.release.wait()
        return x + 1


def _row(value: float) -> torch.Tensor:
    return torch.full((1, 2), float(value))


def test_pinned_queries_are_served_by_their_subnet_in_batches_of_one_subnet():
    async def main():
        release = asyncio.Event()
        worker = GatedWorker(release)
        router = Router([worker], MaxAcc(PROFILE), clock=lambda: 0.0)
        await router.start()
        busy = router.submit(_row(0), slo_ms=1000)  # occupies the only worker
        queued = [router.submit(_row(v), slo_ms=slo, subnet=pin) for v, slo, pin in
                  [(1, 500, "a"), (2, 510, "b"), (3, 520, None), (4, 530, "c"), (5, 540, 0), (6, 550, None)]]
        release.set()
        results = await asyncio.gather(busy, *queued)
        await router.stop()
        return worker.seen, results

    seen, results = asyncio.run(main())
    # head "a" takes the other query pinned to "a" (index 0) and steps over the rest; then "b" alone;
    # then the unpinned head: MaxAcc picks "c" for it, which the query pinned to "c" joins
    assert seen == [("c", [0.0]), ("a", [1.0, 5.0]), ("b", [2.0]), ("c", [3.0, 4.0, 6.0])]
    assert [r.subnet for r in results] == ["c", "a", "b", "c", "c", "a", "c"]
    for value, r in enumerate(results):
        assert r.outputs.tolist() == [[value + 1.0] * 2]


def test_a_pinned_query_is_late_by_its_own_subnets_latency():
    async def main():
        release = asyncio.Event()
        release.set()
        router = Router([GatedWorker(release)], SlackFit(PROFILE), clock=lambda: 0.0)
        await router.start()
        try:
            with pytest.raises(DeadlineExceeded, match=r"needs 50\.00 ms"):
                await router.infer(_row(1), slo_ms=20, subnet="c")  # "c" needs 50 ms at batch 1
            return await router.infer(_row(2), slo_ms=20)  # unpinned: a fast SubNet fits
        finally:
            await router.stop()

    result = asyncio.run(main())
    assert result.subnet in ("a", "b")


def test_the_router_rejects_a_subnet_it_does_not_serve():
    async def main():
        router = Router([GatedWorker(asyncio.Event())], SlackFit(PROFILE))
        await router.start()
        for bad in ("zz", 3, -1, True, 1.0):
            with pytest.raises(ValueError, match=r"\['a', 'b', 'c'\] or an index in \[0, 3\), got "):
                router.submit(_row(0), slo_ms=100, subnet=bad)
        assert router.queue_length == 0
        await router.stop()

    asyncio.run(main())


def test_decide_pinned_sizes_the_batch_by_that_subnets_latency():
    policy = SlackFit(PROFILE)
    assert policy.decide_pinned(QueueState(0.0, 0.0045, 8), 1).batch_size == 2  # "b": 4 ms at batch 2
    assert policy.decide_pinned(QueueState(0.0, 0.0045, 1), 0).batch_size == 1  # capped by the queue
    assert policy.decide_pinned(QueueState(0.0, 0.0045, 8), 0).batch_size == 4  # "a": 4 ms at batch 4
    late = policy.decide_pinned(QueueState(0.0, 0.001, 3), 2)  # nothing fits: drain with the largest batch
    assert (late.subnet, late.batch_size) == (2, 3)


@pytest.fixture(scope="module")
def live(deployment, serve_in_thread):
    workers = make_local_workers(deployment, workers=1, backend="eager")
    app, _ = build_app(deployment, workers, "slackfit", default_slo_ms=60_000, overhead_ms=0.0)
    with serve_in_thread(app) as address:
        yield f"http://{address}/v2/models/{deployment.model.name}/infer"


def _body(x: np.ndarray, **parameters) -> dict:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
            "parameters": parameters}


def test_http_requests_pin_a_served_subnet(live, deployment):
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    reference = load_supernet(deployment.spec.model)
    for entry in deployment.served:
        r = httpx.post(live, json=_body(x, subnet_id=entry.id), timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["parameters"]["subnet_id"] == entry.id
        with torch.no_grad():
            expected = reference.extract(entry.config).eval()(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(np.asarray(r.json()["outputs"][0]["data"]).reshape(1, -1), expected, atol=1e-4)


@pytest.mark.parametrize("bad", ["not-a-subnet", 3, ["x"], True])
def test_http_unknown_subnet_id_gets_400_naming_the_served_ones(live, deployment, bad):
    x = np.zeros((1, 3, 32, 32), np.float32)
    r = httpx.post(live, json=_body(x, subnet_id=bad), timeout=60)
    assert r.status_code == 400
    message = r.json()["error"]
    assert message.startswith("parameter 'subnet_id' must be one of the served SubNets [")
    assert all(sid in message for sid in deployment.served.ids)
    assert message.endswith(f"got {bad!r}")
    assert httpx.post(live, json=_body(x), timeout=60).status_code == 200  # still serving


def test_grpc_requests_pin_a_served_subnet(deployment, serve_in_thread):
    grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is needed for the gRPC test")
    from tritonclient.utils import InferenceServerException

    from ws_serve.grpc_server import add_grpc_endpoint

    workers = make_local_workers(deployment, workers=1, backend="eager")
    app, _ = build_app(deployment, workers, "slackfit", default_slo_ms=60_000, overhead_ms=0.0)
    endpoint = add_grpc_endpoint(app, "127.0.0.1", 0, grace_s=1)
    inp = grpcclient.InferInput("input", [1, 3, 32, 32], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    with serve_in_thread(app):
        client = grpcclient.InferenceServerClient(endpoint.address)
        try:
            for sid in deployment.served.ids:
                result = client.infer(deployment.model.name, [inp], parameters={"subnet_id": sid})
                assert result.get_response().parameters["subnet_id"].string_param == sid
            with pytest.raises(InferenceServerException, match=r"must be one of the served SubNets .* got 'nope'"):
                client.infer(deployment.model.name, [inp], parameters={"subnet_id": "nope"})
        finally:
            client.close()

"""ws-serve serves the elastic ViT: SubNetAct switches SubNets per request, ONNX Runtime runs its exports."""

from __future__ import annotations

import pytest
import timm
import torch

import ws_core  # noqa: F401  (registers the ws_* SuperNets)
from ws_core.elastic import ElasticLayerNorm
from ws_serve import backends as backends_module
from ws_serve.backends import OnnxRuntimeBackend, make_backend
from ws_serve.subnetact import LayerSelect, SubNetAct, SubnetNorm, WeightSlice


@pytest.fixture
def vit():
    torch.manual_seed(0)
    net = timm.create_model("ws_vit_nano_patch4_28", num_classes=10).eval()
    with torch.no_grad():  # LayerNorms off 1 / 0 so a wrong slice would show
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    served = [net.space.min(), net.space.max(), *(net.space.sample(g) for _ in range(2))]
    return net, served


@pytest.fixture(autouse=True)
def _fresh_sessions():
    """ONNX Runtime sessions are shared in-process between backends; each test starts without any."""
    backends_module._SESSIONS.clear()
    yield
    backends_module._SESSIONS.clear()


def _x(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_subnetact_switches_vit_subnets_per_request(vit):
    net, served = vit
    extracted = [net.extract(cfg).eval() for cfg in served]
    storage = {k: v.data_ptr() for k, v in net.state_dict(keep_vars=True).items()}
    act = SubNetAct(net, served)
    # the operators: depth through LayerSelect, every elastic leaf (LayerNorms included) through WeightSlice;
    # there is no BatchNorm, so no SubnetNorm and no per-SubNet statistics (LayerNorm needs none)
    assert isinstance(net.stages[0], LayerSelect)
    assert isinstance(net.head.norm, WeightSlice) and isinstance(net.head.norm, ElasticLayerNorm)
    assert not any(isinstance(m, SubnetNorm) for m in net.modules())
    assert act.statistics(0).stats == {} and act.nbytes()["subnet_norm"] == 0
    # requests naming SubNets in an interleaved order, each answered by its own SubNet
    for i, row in enumerate([1, 0, 3, 2, 0, 1, 3]):
        x = _x(2, seed=i)
        with torch.no_grad():
            torch.testing.assert_close(act(x, act.ids[row]), extracted[row](x), atol=1e-5, rtol=0)
        assert net.active == served[row]
    assert {k: v.data_ptr() for k, v in net.state_dict(keep_vars=True).items()} == storage  # nothing copied
    act.remove()
    assert not any(isinstance(m, WeightSlice) for m in net.modules())


def test_onnxruntime_backend_serves_vit_exports(vit, tmp_path):
    net, served = vit
    act = SubNetAct(net, served[:3])
    backend = make_backend("auto", act, cache_dir=tmp_path, threads=1)  # the default on CPU
    assert isinstance(backend, OnnxRuntimeBackend)
    backend.prepare((3, 28, 28), [1, 3])
    assert backend.exported == list(act.ids) and backend.fallback_ids == []  # every SubNet exported
    for r, sid in enumerate(act.ids):
        sub = act.extract(r).eval()
        for n in (1, 3):
            x = _x(n, seed=10 + r)
            with torch.no_grad():
                expected = sub(x)
            out = backend(x, sid)
            assert out.shape == (n, 10)
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    per_subnet = [backend.sessions[r].weight_bytes for r in range(3)]
    assert per_subnet[0] < per_subnet[1]  # the min SubNet's export holds fewer weights than the max's

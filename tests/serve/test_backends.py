from __future__ import annotations

import pytest
import torch

from ws_serve.backends import BACKENDS, CompileBackend, CUDAGraphBackend, EagerBackend, TensorRTBackend, make_backend
from ws_serve.runtime import LocalWorker, WorkerDied
from ws_serve.subnetact import SubNetAct

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _x(n=2):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_eager_backend_matches_the_deployment(tiny_net, configs):
    act = SubNetAct(tiny_net, configs[:3])
    backend = make_backend("eager", act)
    x = _x()
    with torch.no_grad():
        for r in range(3):
            torch.testing.assert_close(backend(x, act.ids[r]), act(x, r))
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend("onnx", act)
    assert set(BACKENDS) == {"eager", "compile", "cudagraphs", "tensorrt"}


def test_local_worker_runs_in_its_thread_and_dies_explicitly(tiny_net, configs):
    import asyncio

    act = SubNetAct(tiny_net, configs[:2])
    worker = LocalWorker(EagerBackend(act), "cpu-0")
    x = _x()

    async def main():
        out = await worker.infer(x, act.ids[1])
        worker.kill()
        with pytest.raises(WorkerDied):
            await worker.infer(x, act.ids[1])
        await worker.close()
        return out

    out = asyncio.run(main())
    with torch.no_grad():
        torch.testing.assert_close(out, act(x, 1))


@pytest.mark.slow
def test_compile_backend_matches_eager(tiny_net):
    # Dynamo tracing is slow on small CPUs: one served SubNet, one batch size, the "eager" compiler backend
    act = SubNetAct(tiny_net, [tiny_net.space.min()])
    x = _x()
    with torch.no_grad():
        expected = act(x, 0)
    backend = CompileBackend(act, backend="eager", dynamic=False)
    torch.testing.assert_close(backend(x, 0), expected)


def test_gpu_backends_refuse_a_cpu_deployment(tiny_net, configs):
    act = SubNetAct(tiny_net, configs[:1])
    with pytest.raises(RuntimeError, match="CUDA device"):
        CUDAGraphBackend(act)
    try:
        import torch_tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="ws-serve\\[tensorrt\\]"):
            TensorRTBackend(act)
    else:  # pragma: no cover - only where torch-tensorrt is installed
        with pytest.raises(RuntimeError, match="CUDA device"):
            TensorRTBackend(act)


@pytest.mark.gpu
@requires_cuda
def test_cuda_graphs_per_subnet_and_batch(tiny_net, configs):
    act = SubNetAct(tiny_net, configs[:3])
    act.net.cuda()
    eager = EagerBackend(act)
    graphs = CUDAGraphBackend(act)
    graphs.prepare((3, 32, 32), [1, 2, 4])
    assert len(graphs.graphs) == 3 * 3
    for n in (1, 2, 3, 4):
        x = _x(n).cuda()
        for r in range(3):
            torch.testing.assert_close(graphs(x, r), eager(x, r), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="exceeds the captured sizes"):
        graphs(_x(5).cuda(), 0)


@pytest.mark.gpu
@requires_cuda
def test_tensorrt_engines_per_subnet(tiny_net, configs):
    pytest.importorskip("torch_tensorrt", reason="needs torch-tensorrt (pip install 'ws-serve[tensorrt]')")
    act = SubNetAct(tiny_net, configs[:2])
    act.net.cuda()
    backend = TensorRTBackend(act, precisions=[torch.float32])
    backend.prepare((3, 32, 32), [1, 4])
    x = _x(3).cuda()
    for r in range(2):
        torch.testing.assert_close(backend(x, r), EagerBackend(act)(x, r), atol=1e-2, rtol=1e-2)

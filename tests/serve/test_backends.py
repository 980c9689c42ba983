from __future__ import annotations

import pytest
import torch

from ws_core.bn import BNStatistics, collect_bn_statistics
from ws_serve import backends as backends_module
from ws_serve.backends import (
    BACKENDS,
    CompileBackend,
    CUDAGraphBackend,
    EagerBackend,
    OnnxRuntimeBackend,
    TensorRTBackend,
    make_backend,
)
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
    with pytest.raises(ValueError, match=r"unknown backend 'onnx'; allowed .*'auto'.*'onnxruntime'"):
        make_backend("onnx", act)
    assert set(BACKENDS) == {"eager", "onnxruntime", "compile", "cudagraphs", "tensorrt"}


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
        expected = act.extract(0).eval()(x)
    backend = CompileBackend(act, backend="eager", dynamic=False)
    torch.testing.assert_close(backend(x, 0), expected, atol=1e-5, rtol=1e-5)
    assert backend.weight_bytes() == act.nbytes()["total"]


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


# ONNX Runtime -----------------------------------------------------------------------------------
def _statistics(net, configs, seed=0):
    """Per-SubNet BN statistics that differ between SubNets and from the SuperNet's (recalibration is slow)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for cfg in configs:
        shared = collect_bn_statistics(net, cfg)
        out.append(BNStatistics(shared.config, {
            name: (torch.randn(mean.shape, generator=g) * 0.1, torch.rand(var.shape, generator=g) * 0.8 + 0.2)
            for name, (mean, var) in shared.stats.items()}))
    return out


@pytest.fixture(autouse=True)
def _fresh_session_pool():
    """Sessions are shared in-process between backends; each test starts without any."""
    backends_module._SESSIONS.clear()
    yield
    backends_module._SESSIONS.clear()


def test_cpu_backends_equal_extract_and_onnxruntime_holds_a_copy_per_subnet(tiny_net, configs, tmp_path):
    served = configs[:3]  # min, max, one random SubNet
    act = SubNetAct(tiny_net, served, _statistics(tiny_net, served))
    ort = make_backend("onnxruntime", act, cache_dir=tmp_path, threads=1)
    assert ort.weight_bytes() == 0  # nothing loaded before prepare
    eager = make_backend("eager", act)
    for b in (ort, eager):
        b.prepare((3, 32, 32), [1, 2, 3])
    assert ort.exported == list(act.ids) and ort.fallback_ids == []
    assert ort.prepare_seconds > 0
    g = torch.Generator().manual_seed(4)
    for r, sid in enumerate(act.ids):
        sub = act.extract(r).eval()
        for n in (1, 3):
            x = torch.randn(n, 3, 32, 32, generator=g)
            with torch.no_grad():
                expected = sub(x)
            assert expected.abs().max() > 1e-2  # outputs large enough for atol 1e-5 to mean something
            for b in (ort, eager):
                out = b(x, sid)
                assert out.shape == (n, 10) and out.dtype == torch.float32
                torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # the SubNet's own statistics are folded in, not the SuperNet's shared ones
    x = _x()
    with act.suspended() as net, torch.no_grad():
        shared = net.extract(act.served[1]).eval()(x)
    assert not torch.allclose(ort(x, act.ids[1]), shared, atol=1e-3, rtol=1e-3)
    # one file per SubNet, nothing half-written
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == sorted(act.ids)
    assert all(p.suffix == ".onnx" for p in tmp_path.iterdir())
    # weight memory: one shared copy for eager, one copy per SubNet for ONNX Runtime
    assert eager.weight_bytes() == act.nbytes()["total"]
    per_subnet = [ort.sessions[r].weight_bytes for r in range(len(act.ids))]
    assert ort.weight_bytes() == sum(per_subnet) > eager.weight_bytes()
    assert min(per_subnet) == per_subnet[0] and max(per_subnet) == per_subnet[1]
    assert 0.5 * act.nbytes()["supernet"] < per_subnet[1] <= act.nbytes()["supernet"]  # BN folded away


def test_onnx_cache_is_reused_and_keyed_by_statistics(tiny_net, configs, tmp_path, monkeypatch):
    served = configs[:1]
    act = SubNetAct(tiny_net, served, _statistics(tiny_net, served, seed=0))
    first = OnnxRuntimeBackend(act, cache_dir=tmp_path, threads=1)
    first.prepare((3, 32, 32), [1])
    x = _x()
    expected = first(x, 0)
    assert len(list(tmp_path.iterdir())) == 1

    def no_export(*args, **kwargs):
        raise AssertionError("torch.onnx.export called although the SubNet is cached")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    backends_module._SESSIONS.clear()  # as after a restart
    second = OnnxRuntimeBackend(act, cache_dir=tmp_path, threads=1, fallback=False)
    second.prepare((3, 32, 32), [1])
    assert second.exported == []
    torch.testing.assert_close(second(x, 0), expected, atol=0, rtol=0)
    # same process, another backend (e.g. a second CPU worker): the session itself is shared
    third = OnnxRuntimeBackend(act.replica(), cache_dir=tmp_path, threads=1, fallback=False)
    third.prepare((3, 32, 32), [1])
    assert third.sessions[0] is second.sessions[0]
    monkeypatch.undo()

    # other SubnetNorm statistics: another key, exported again next to the first file
    act.remove()
    other = SubNetAct(tiny_net, served, _statistics(tiny_net, served, seed=1))
    fourth = OnnxRuntimeBackend(other, cache_dir=tmp_path, threads=1)
    fourth.prepare((3, 32, 32), [1])
    assert fourth.exported == [other.ids[0]]
    assert len(list(tmp_path.iterdir())) == 2
    with torch.no_grad():
        torch.testing.assert_close(fourth(x, 0), other.extract(0).eval()(x), atol=1e-5, rtol=1e-5)

    # a damaged cache file is exported again (with a warning), not trusted
    for f in tmp_path.iterdir():
        f.write_bytes(b"not an onnx model")
    backends_module._SESSIONS.clear()
    fifth = OnnxRuntimeBackend(other, cache_dir=tmp_path, threads=1)
    with pytest.warns(RuntimeWarning, match="could not be loaded"):
        fifth.prepare((3, 32, 32), [1])
    assert fifth.exported == [other.ids[0]]
    torch.testing.assert_close(fifth(x, 0), fourth(x, 0), atol=0, rtol=0)


def test_auto_is_onnxruntime_on_cpu_with_eager_fallback(tiny_net, configs, tmp_path, monkeypatch):
    act = SubNetAct(tiny_net, configs[:2])
    assert backends_module.DEFAULT_BACKEND == "auto"
    auto = make_backend("auto", act, cache_dir=tmp_path)
    assert isinstance(auto, OnnxRuntimeBackend) and auto.threads is None  # chosen per SubNet

    def broken(self, row, shape):
        if row == 1:
            raise RuntimeError("unsupported operator")
        return real(self, row, shape)

    real = OnnxRuntimeBackend._export
    monkeypatch.setattr(OnnxRuntimeBackend, "_export", broken)
    with pytest.warns(RuntimeWarning, match=f"SubNet {act.ids[1]} could not be exported.*eager backend"):
        auto.prepare((3, 32, 32), [1])
    assert auto.fallback_ids == [act.ids[1]] and sorted(auto.sessions) == [0]
    assert auto.weight_bytes() == auto.sessions[0].weight_bytes + act.nbytes()["total"]
    x = _x()
    with torch.no_grad():
        for r in range(2):
            torch.testing.assert_close(auto(x, r), act.extract(r).eval()(x), atol=1e-5, rtol=1e-5)
    strict = OnnxRuntimeBackend(act, cache_dir=None, fallback=False)
    with pytest.raises(RuntimeError, match="unsupported operator"):
        strict.prepare((3, 32, 32), [1])


def test_intra_op_threads_are_chosen_per_subnet_by_measurement(tiny_net, configs, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    opened = []
    real = OnnxRuntimeBackend._open

    def spy(self, model, threads):
        opened.append(threads)
        return real(self, model, threads)

    monkeypatch.setattr(OnnxRuntimeBackend, "_open", spy)
    act = SubNetAct(tiny_net, configs[:2])
    measured = OnnxRuntimeBackend(act, cache_dir=None)
    measured.prepare((3, 32, 32), [1, 3])
    assert opened == [1, 3, 1, 3]  # both candidates, for each SubNet
    chosen = measured.threads_by_subnet()
    assert list(chosen) == list(act.ids) and set(chosen.values()) <= {1, 3}
    assert all(measured.sessions[r].session.get_session_options().intra_op_num_threads == chosen[act.ids[r]]
               for r in range(2))
    opened.clear()
    fixed = OnnxRuntimeBackend(act, cache_dir=None, threads=2)
    fixed.prepare((3, 32, 32), [1, 3])
    assert opened == [2, 2] and fixed.threads_by_subnet() == dict.fromkeys(act.ids, 2)
    x = _x()
    with torch.no_grad():
        for r in range(2):
            torch.testing.assert_close(measured(x, r), act.extract(r).eval()(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"threads must be >= 1 or None \(chosen per SubNet\), got 0"):
        OnnxRuntimeBackend(act, threads=0)
    opened.clear()  # max_threads bounds the candidates: 1 or 2 here, and 1 alone needs no measurement
    capped = OnnxRuntimeBackend(act, cache_dir=None, max_threads=2)
    capped.prepare((3, 32, 32), [1, 3])
    assert opened == [1, 2, 1, 2] and set(capped.threads_by_subnet().values()) <= {1, 2}
    opened.clear()
    one = OnnxRuntimeBackend(act, cache_dir=None, max_threads=1)
    one.prepare((3, 32, 32), [1, 3])
    assert opened == [1, 1] and one.threads_by_subnet() == dict.fromkeys(act.ids, 1)
    with pytest.raises(ValueError, match=r"max_threads must be >= 1 or None \(torch's threads\), got 0"):
        OnnxRuntimeBackend(act, max_threads=0)


def test_a_server_keeps_a_core_for_its_request_handling(monkeypatch):
    from ws_serve.backends import server_max_threads

    for cores, workers, expected in [(2, 1, 1), (1, 1, 1), (16, 1, 15), (16, 4, 3), (16, 16, 1), (4, 8, 1)]:
        monkeypatch.setattr(torch, "get_num_threads", lambda cores=cores: cores)
        assert server_max_threads(workers) == expected, (cores, workers)
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        server_max_threads(0)


def test_server_backend_options_are_one_set_for_profile_and_workers(monkeypatch):
    from ws_serve.backends import server_backend_options

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert server_backend_options("auto") == {"max_threads": 1}
    assert server_backend_options("onnxruntime", 1, spinning="run") == {"max_threads": 1, "spinning": "run"}
    assert server_backend_options("auto", threads=2, spinning="off") == {"threads": 2, "spinning": "off"}
    assert server_backend_options("eager") == server_backend_options("auto", device="cuda") == {}


def test_spinning_modes_set_onnx_runtime_session_options(tiny_net, configs, monkeypatch):
    act = SubNetAct(tiny_net, configs[:1])
    expected = {"off": ("0", None), "run": ("1", "1"), "on": ("1", None)}
    for mode, (allow, stop) in expected.items():
        backend = OnnxRuntimeBackend(act, cache_dir=None, threads=2, spinning=mode)
        backend.prepare((3, 32, 32), [1])
        options = backend.sessions[0].session.get_session_options()
        assert backend.spinning == mode
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == allow
        if stop is None:
            with pytest.raises(RuntimeError):  # ONNX Runtime raises for an entry that was never set
                options.get_session_config_entry("session.force_spinning_stop")
        else:
            assert options.get_session_config_entry("session.force_spinning_stop") == stop
        with torch.no_grad():
            torch.testing.assert_close(backend(_x(), 0), act.extract(0).eval()(_x()), atol=1e-5, rtol=1e-5)
    assert [OnnxRuntimeBackend(act, spinning=b).spinning for b in (True, False)] == ["on", "off"]
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # how ws_serve.launch starts servers
    assert OnnxRuntimeBackend(act).spinning == "run"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert OnnxRuntimeBackend(act).spinning == "on"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert OnnxRuntimeBackend(act).spinning == "on"
    with pytest.raises(ValueError, match=r"spinning must be one of \('off', 'run', 'on'\) \(or True/False/None\), "
                                         r"got 'sometimes'"):
        OnnxRuntimeBackend(act, spinning="sometimes")


def test_bad_inputs_give_clear_errors(tiny_net, configs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WS_SERVE_CACHE_DIR", str(tmp_path / "unused"))
    assert backends_module.default_cache_dir() == tmp_path / "unused" / "onnx"
    act = SubNetAct(tiny_net, configs[:1])
    ort = OnnxRuntimeBackend(act, cache_dir=None, threads=1)
    with pytest.raises(RuntimeError, match="call prepare"):
        ort(_x(), 0)
    eager = EagerBackend(act)
    for b in (ort, eager):
        b.prepare((3, 32, 32), [1])
        with pytest.raises(ValueError, match=r"input must be \[batch, 3, \.\.\.\].*got \[2, 4, 32, 32\]"):
            b(torch.zeros(2, 4, 32, 32), 0)
        with pytest.raises(ValueError, match=r"got \[3, 32, 32\]"):
            b(torch.zeros(3, 32, 32), 0)
        with pytest.raises(KeyError, match="not served"):
            b(_x(), "nope")
    # another image size is resized to the SubNet's resolution, as the eager deployment does
    x = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ort(x, 0), eager(x, 0), atol=1e-5, rtol=1e-5)
    assert ort.exported == [act.ids[0]] and list(tmp_path.iterdir()) == []  # cache_dir=None writes nothing


def test_local_workers_default_to_onnxruntime_on_cpu(tiny_net, configs, tmp_path, monkeypatch):
    import asyncio
    from types import SimpleNamespace

    from ws_serve.deploy import make_local_workers

    monkeypatch.setenv("WS_SERVE_CACHE_DIR", str(tmp_path))
    act = SubNetAct(tiny_net, configs[:1], _statistics(tiny_net, configs[:1], seed=2))
    dep = SimpleNamespace(act=act, model=SimpleNamespace(sample_shape=(3, 32, 32), max_batch=4))
    workers = make_local_workers(dep, workers=2)
    assert [type(w.backend) for w in workers] == [OnnxRuntimeBackend] * 2
    first, second = (w.backend for w in workers)
    assert first.sessions[0] is second.sessions[0]  # one session (one weight copy) per SubNet, not per worker
    assert len(list((tmp_path / "onnx").iterdir())) == 1
    x = _x(3)

    async def main():
        out = await workers[1].infer(x, act.ids[0])
        for w in workers:
            await w.close()
        return out

    out = asyncio.run(main())
    with torch.no_grad():
        torch.testing.assert_close(out, act.extract(0).eval()(x), atol=1e-5, rtol=1e-5)

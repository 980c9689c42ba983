from __future__ import annotations

import threading

import pytest
import timm
import torch

from ws_core.bn import BNStatistics
from ws_core.checkpoint import load_checkpoint, save_checkpoint
from ws_core.cost import profile_latency
from ws_serve.subnetact import (
    LayerSelect,
    SubNetAct,
    SubnetNorm,
    WeightSlice,
    load_subnet_norm,
    recalibrated_statistics,
    save_subnet_norm,
    subnet_norm_path,
)


def _x(n=3, seed=5):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 1.5


def _reference_outputs(net, configs, stats, x):
    """ws-core extract() of each SubNet, with that SubNet's statistics applied to the SuperNet first."""
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    outs = []
    with torch.no_grad():
        for cfg, s in zip(configs, stats):
            if s is not None:
                s.apply(net)
            outs.append(net.extract(cfg).eval()(x))
            net.load_state_dict(saved)
    return outs


def test_outputs_equal_extract_with_shared_statistics(tiny_net, configs):
    x = _x()
    refs = _reference_outputs(tiny_net, configs, [None] * len(configs), x)
    act = SubNetAct(tiny_net, configs)
    with torch.no_grad():
        for cfg, ref in zip(configs, refs):
            act.actuate(cfg.id)
            torch.testing.assert_close(act(x), ref, atol=1e-5, rtol=0)
        # and in a different order, by row and by config
        for row in reversed(range(len(configs))):
            torch.testing.assert_close(act(x, row), refs[row], atol=1e-5, rtol=0)
        torch.testing.assert_close(act(x, configs[2].to_dict()), refs[2], atol=1e-5, rtol=0)


def test_subnet_norm_statistics_give_each_subnet_its_own_bn(tiny_net, configs, loader):
    x = _x()
    stats = recalibrated_statistics(tiny_net, configs, loader, num_batches=2)
    refs = _reference_outputs(tiny_net, configs, stats, x)
    shared = _reference_outputs(tiny_net, configs, [None] * len(configs), x)
    act = SubNetAct(tiny_net, configs, statistics={s.subnet_id: s for s in stats})
    with torch.no_grad():
        for cfg, ref, plain in zip(configs, refs, shared):
            out = act(x, cfg.id)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
            assert not torch.allclose(out, plain, atol=1e-3)  # the per-SubNet statistics matter
    # the SuperNet's own running statistics were restored by recalibrated_statistics
    for cfg, s in zip(configs, stats):
        got = act.statistics(cfg.id)
        assert got.stats.keys() == s.stats.keys()
        for name, (mean, var) in s.stats.items():
            torch.testing.assert_close(got.stats[name][0], mean)
            torch.testing.assert_close(got.stats[name][1], var)


def test_operators_inserted_on_every_elastic_module_and_removed_cleanly(tiny_net, configs):
    before = {n: type(m) for n, m in tiny_net.named_modules()}
    state_keys = list(tiny_net.state_dict())
    act = SubNetAct(tiny_net, configs)
    mods = dict(tiny_net.named_modules())
    assert isinstance(mods["stages.0"], LayerSelect)
    assert isinstance(mods["stages.0.blocks.0.conv_pw"], WeightSlice)
    assert isinstance(mods["stages.0.blocks.0.conv_dw"], WeightSlice)
    assert isinstance(mods["head.classifier"], WeightSlice)
    assert isinstance(mods["stages.0.blocks.0.bn1"], SubnetNorm)
    assert isinstance(mods["stem.conv.bn"], SubnetNorm)  # static BN too: its statistics differ per SubNet
    assert type(mods["stem.conv.conv"]) is before["stem.conv.conv"]  # static conv: nothing to route
    assert list(tiny_net.state_dict()) == state_keys  # checkpoints are unaffected
    assert "LayerSelect[ElasticStage]" in repr(tiny_net)
    act.remove()
    assert {n: type(m) for n, m in tiny_net.named_modules()} == before
    assert not any(k.startswith("subnet_running") for k in dict(tiny_net.named_buffers()))
    with pytest.raises(RuntimeError, match="already removed"):
        act.remove()


def test_actuation_copies_no_weights(tiny_net, configs):
    act = SubNetAct(tiny_net, configs)
    storages = {n: (t.data_ptr(), t.shape) for n, t in tiny_net.state_dict(keep_vars=True).items()}
    buffers = {n: b.data_ptr() for n, b in tiny_net.named_buffers()}
    nbytes = act.nbytes()
    x = _x(2)
    with torch.no_grad():
        for _ in range(2):
            for cfg in configs:
                act.actuate(cfg.id)
                act(x)
    assert {n: (t.data_ptr(), t.shape) for n, t in tiny_net.state_dict(keep_vars=True).items()} == storages
    assert {n: b.data_ptr() for n, b in tiny_net.named_buffers()} == buffers
    assert act.nbytes() == nbytes
    weights = sum(t.numel() * t.element_size() for t in tiny_net.state_dict().values())
    assert nbytes["supernet"] == weights
    assert 0 < nbytes["subnet_norm"] < weights / 10  # statistics are small next to the weights


def test_actuation_is_a_row_write(tiny_net, configs):
    act = SubNetAct(tiny_net, configs)
    act.actuate(configs[3].id)
    assert act.state.row == 3
    assert tiny_net.active == configs[3]
    act.actuate(1)
    assert act.state.row == 1 and tiny_net.active == configs[1]


def test_unknown_subnet_and_bad_arguments(tiny_net, configs):
    with pytest.raises(ValueError, match="non-empty"):
        SubNetAct(tiny_net, [])
    with pytest.raises(ValueError, match="distinct"):
        SubNetAct(tiny_net, [configs[0], configs[0]])
    with pytest.raises(ValueError, match="depth"):
        SubNetAct(tiny_net, [{**configs[0].to_dict(), "depth": [9] * 5}])
    with pytest.raises(TypeError, match="SuperNet"):
        SubNetAct(torch.nn.Linear(2, 2), configs)  # type: ignore[arg-type]
    act = SubNetAct(tiny_net, configs[:2])
    with pytest.raises(KeyError, match="not served"):
        act.actuate("0123456789ab")
    with pytest.raises(KeyError, match="row must be"):
        act.actuate(7)
    with pytest.raises(KeyError, match="not served"):
        act.actuate(configs[3])
    with pytest.raises(ValueError, match="already inserted"):
        SubNetAct(tiny_net, configs[:1])


def test_statistics_must_fit(tiny_net, configs, loader):
    stats = recalibrated_statistics(tiny_net, configs[:2], loader, num_batches=1)
    with pytest.raises(ValueError, match="no BN statistics"):
        SubNetAct(tiny_net, configs[:3], statistics={s.subnet_id: s for s in stats})
    with pytest.raises(ValueError, match="given for SubNet"):
        SubNetAct(tiny_net, configs[:2], statistics=list(reversed(stats)))
    broken = BNStatistics(stats[0].config, dict(list(stats[0].stats.items())[1:]))
    with pytest.raises(ValueError, match="lack layer"):
        SubNetAct(tiny_net, configs[:1], statistics=[broken])
    assert type(tiny_net).__name__ == "OFAMobileNetV3"  # a failed insertion leaves the net untouched


def test_ws_core_activate_and_profile_latency_use_the_served_path(tiny_net, configs):
    act = SubNetAct(tiny_net, configs[:2])
    tiny_net.activate(configs[1])
    assert act.state.row == 1
    tiny_net.activate(configs[2])  # not served: ws-core's own actuation, operators pass through
    assert act.state.row is None
    x = _x(2)
    with torch.no_grad():
        ref = tiny_net(x)
        torch.testing.assert_close(tiny_net.extract(configs[2]).eval()(x), ref, atol=1e-5, rtol=0)
    table = profile_latency(tiny_net, configs[:2], batch_sizes=(1,), warmup=0, repeats=1)
    assert [e.subnet_id for e in table.entries] == [c.id for c in configs[:2]]
    assert tiny_net.active == configs[2] and act.state.row is None  # restored afterwards


def test_replicas_share_weights_and_serve_concurrently(tiny_net, configs):
    x = _x(2)
    refs = _reference_outputs(tiny_net, configs, [None] * len(configs), x)
    act = SubNetAct(tiny_net, configs)
    rep = act.replica()
    assert all(p.data_ptr() == q.data_ptr() for p, q in zip(tiny_net.parameters(), rep.net.parameters()))
    assert all(p.data_ptr() == q.data_ptr() for p, q in zip(tiny_net.buffers(), rep.net.buffers()))
    errors = []

    def serve(a, rows):
        try:
            with torch.no_grad():
                for _ in range(3):
                    for r in rows:
                        torch.testing.assert_close(a(x, r), refs[r], atol=1e-5, rtol=0)
        except AssertionError as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=serve, args=(act, [0, 2, 4])),
               threading.Thread(target=serve, args=(rep, [1, 3]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # ws-core actuation works on the replica too (its per-block plans were reset)
    rep.net.activate(configs[3])
    with torch.no_grad():
        torch.testing.assert_close(rep.net(x), refs[3], atol=1e-5, rtol=0)
    copy = act.replica(share_tensors=False)
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(tiny_net.parameters(), copy.net.parameters()))


def test_extract_of_a_served_subnet(tiny_net, configs, loader):
    stats = recalibrated_statistics(tiny_net, configs[:2], loader, num_batches=1)
    act = SubNetAct(tiny_net, configs[:2], stats)
    x = _x(2)
    sub = act.extract(1).eval()
    assert not any(isinstance(m, (SubnetNorm, WeightSlice, LayerSelect)) for m in sub.modules())
    assert not any("subnet_running" in n for n, _ in sub.named_buffers())
    with torch.no_grad():
        torch.testing.assert_close(sub(x), act(x, 1), atol=1e-5, rtol=0)
    assert type(tiny_net).__name__ == "SubNetAct[OFAMobileNetV3]"  # operators are back after extract


def test_elastic_resolution_is_routed(configs):
    torch.manual_seed(0)
    net = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10, resolutions=(24, 32)).eval()
    small = net.space.min()
    assert small["resolution"] == 24
    act = SubNetAct(net, [small, net.space.max()])
    x = _x(2)
    with torch.no_grad():
        ref = net.extract(small).eval()(torch.nn.functional.interpolate(x, size=(24, 24), mode="bilinear"))
        torch.testing.assert_close(act(x, small.id), ref, atol=1e-5, rtol=0)


def test_resnet_supernet(configs):
    torch.manual_seed(0)
    net = timm.create_model("ws_ofa_resnet50_025_32", num_classes=10).eval()
    g = torch.Generator().manual_seed(3)
    cfgs = [net.space.min(), net.space.sample(g)]
    x = _x(2)
    refs = _reference_outputs(net, cfgs, [None, None], x)
    act = SubNetAct(net, cfgs)
    with torch.no_grad():
        for i in range(2):
            torch.testing.assert_close(act(x, i), refs[i], atol=1e-5, rtol=0)


def test_statistics_round_trip_next_to_checkpoint(tiny_net, configs, loader, tmp_path):
    ckpt = save_checkpoint(tiny_net, tmp_path / "net.safetensors")
    stats = recalibrated_statistics(tiny_net, configs[:3], loader, num_batches=1)
    path = save_subnet_norm(subnet_norm_path(ckpt), stats)
    assert path.name == "net.safetensors.subnetnorm.safetensors"
    loaded = load_subnet_norm(path)
    assert [s.config for s in loaded] == [s.config for s in stats]
    for a, b in zip(loaded, stats):
        assert a.stats.keys() == b.stats.keys()
        for k in a.stats:
            torch.testing.assert_close(a.stats[k][0], b.stats[k][0])
    # a fresh process: load the checkpoint, then the statistics -> same outputs
    torch.manual_seed(123)
    fresh = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10).eval()
    load_checkpoint(fresh, ckpt)
    x = _x(2)
    a = SubNetAct(tiny_net, configs[:3], stats)
    b = SubNetAct(fresh, configs[:3], loaded)
    with torch.no_grad():
        for r in range(3):
            torch.testing.assert_close(a(x, r), b(x, r))
    with pytest.raises(ValueError, match="not a SubnetNorm"):
        load_subnet_norm(ckpt)

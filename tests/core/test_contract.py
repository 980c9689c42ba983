"""The ws-core SuperNet contract, checked for every SuperNet registered in timm as ``ws_*``.

A new registered SuperNet is covered here without editing this file.
"""

from __future__ import annotations

import gc
import warnings

import pytest
import timm
import torch

import ws_core
from ws_core import SubNetConfig, SuperNet

MODELS = timm.list_models("ws_*")


def test_reference_supernets_registered():
    expected = {"ws_ofa_mbv3_100", "ws_ofa_mbv3_100_32", "ws_ofa_mbv3_035_32",
                "ws_ofa_resnet50", "ws_ofa_resnet50_32", "ws_ofa_resnet50_025_32"}
    assert expected <= set(MODELS)


@pytest.fixture(scope="module", params=MODELS)
def model(request) -> tuple[str, SuperNet]:
    torch.manual_seed(0)
    net = timm.create_model(request.param, num_classes=7)
    return request.param, net.eval()


def _input(net: SuperNet, cfg: SubNetConfig, batch: int = 2) -> torch.Tensor:
    r = cfg["resolution"]
    return torch.randn(batch, 3, r, r, generator=torch.Generator().manual_seed(1))


def _configs(net: SuperNet, n: int, seed: int = 0) -> list[SubNetConfig]:
    g = torch.Generator().manual_seed(seed)
    return [net.space.sample(g) for _ in range(n)]


def test_pretrained_cfg_states_input_size_and_classes(model):
    name, net = model
    cfg = timm.get_pretrained_cfg(name).to_dict()
    assert len(cfg["input_size"]) == 3 and cfg["input_size"][0] == 3
    assert cfg["num_classes"] > 0
    assert net.get_classifier().out_features == 7
    res = net.space["resolution"].choices
    assert cfg["input_size"][1] == max(res)


def test_forward_shapes_min_max_random(model):
    _, net = model
    for cfg in [net.space.min(), net.space.max(), *_configs(net, 2)]:
        # smallest resolution keeps the large SuperNets fast; 32x32 variants have only 32
        cfg = cfg.replace(resolution=net.space["resolution"].choices[0])
        net.activate(cfg)
        with torch.no_grad():
            out = net(_input(net, cfg))
        assert out.shape == (2, 7)
        assert torch.isfinite(out).all()


def test_extract_matches_active_supernet(model):
    _, net = model
    for cfg in [net.space.min(), *_configs(net, 3, seed=3)]:
        cfg = cfg.replace(resolution=net.space["resolution"].choices[0])
        x = _input(net, cfg)
        sub = net.extract(cfg).eval()
        net.activate(cfg)
        with torch.no_grad():
            torch.testing.assert_close(sub(x), net(x), atol=1e-5, rtol=0)
        assert not any(isinstance(m, ws_core.elastic.ElasticModule) for m in sub.modules())
        assert sub.config == net.space.validate(cfg)


def _storage(net: SuperNet) -> dict[str, tuple[int, int]]:
    return {k: (v.data_ptr(), v.untyped_storage().nbytes()) for k, v in net.state_dict(keep_vars=True).items()}


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on some lazily deprecated module attributes warns
        warnings.simplefilter("ignore")
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())


def test_activate_copies_no_storage(model):
    _, net = model
    before = _storage(net)
    configs = _configs(net, 20, seed=5)
    net.activate(configs[0])
    n_tensors = _live_tensors()
    for cfg in configs[1:]:
        net.activate(cfg)
    assert _live_tensors() == n_tensors
    assert _storage(net) == before


def test_extract_max_parameter_count(model):
    _, net = model
    total = sum(p.numel() for p in net.parameters())
    elastic_only = dict(net.named_parameters())
    elastic_only = sum(elastic_only[n].numel() for n in net.elastic_only_parameters())
    sub = net.extract(net.space.max())
    assert sum(p.numel() for p in sub.parameters()) == total - elastic_only


def test_invalid_configs_raise_value_error_naming_dimension(model):
    _, net = model
    good = net.space.max().to_dict()
    active = net.active
    dim = "depth"
    bad = dict(good, depth=[99] * len(good["depth"]))
    with pytest.raises(ValueError) as err:
        net.activate(bad)
    msg = str(err.value)
    assert "'depth'" in msg and "99" in msg and str(list(net.space[dim].choices)) in msg
    assert net.active == active  # unchanged
    block_dim = next(d.name for d in net.space.dimensions if d.level == "block")
    bad = dict(good, **{block_dim: [7.5] * len(good[block_dim])})
    with pytest.raises(ValueError, match=f"'{block_dim}'.*allows.*got 7.5"):
        net.activate(bad)
    with pytest.raises(ValueError, match="unknown dimension"):
        net.activate(dict(good, colour=1))
    with pytest.raises(ValueError, match="missing dimension"):
        net.activate({k: v for k, v in good.items() if k != block_dim})
    with pytest.raises(ValueError, match="needs"):
        net.activate(dict(good, depth=good["depth"][:-1]))
    with pytest.raises(ValueError, match="'resolution'"):
        net.activate(dict(good, resolution=33))


def test_mark_active_records_the_subnet_without_configuring_layers(model, monkeypatch):
    _, net = model
    previous = net.active
    cfg = _configs(net, 1, seed=5)[0]

    def configure(_cfg):
        raise AssertionError("mark_active must not configure layers")

    monkeypatch.setattr(net, "_configure", configure)
    try:
        assert net.mark_active(cfg.to_dict()) == cfg and net.active == cfg  # a dict is canonicalised
        bad = dict(cfg.to_dict(), depth=[99] * len(cfg["depth"]))
        with pytest.raises(ValueError, match="'depth'"):
            net.mark_active(bad)
        assert net.active == cfg  # unchanged by the invalid config
    finally:
        monkeypatch.undo()
        net.activate(previous)


def test_seeded_sampling_is_reproducible(model):
    _, net = model
    a = _configs(net, 5, seed=11)
    b = _configs(net, 5, seed=11)
    c = _configs(net, 5, seed=12)
    assert a == b and [x.id for x in a] == [x.id for x in b]
    assert a != c


def test_state_dict_round_trip(model):
    name, net = model
    torch.manual_seed(123)
    other = timm.create_model(name, num_classes=7).eval()
    cfg = _configs(net, 1, seed=7)[0].replace(resolution=net.space["resolution"].choices[0])
    x = _input(net, cfg)
    other.load_state_dict(net.state_dict())
    net.activate(cfg)
    other.activate(cfg)
    with torch.no_grad():
        torch.testing.assert_close(other(x), net(x), atol=0, rtol=0)


def test_weight_slices_describe_what_extract_copies(model):
    _, net = model
    cfg = _configs(net, 1, seed=9)[0]
    slices = net.weight_slices(cfg)
    state = net.state_dict()
    assert set(slices) <= set(state)
    sub_state = net.extract(cfg).state_dict()
    # extracted names drop the ElasticStage container ("stages.0.blocks.1." -> "stages.0.1.")
    assert {k.replace(".blocks.", ".") for k in slices} == set(sub_state)
    for key, region in slices.items():
        torch.testing.assert_close(sub_state[key.replace(".blocks.", ".")], state[key][region])
    # skipped blocks read nothing
    depth = cfg["depth"]
    stage0 = net.stages[0]
    n_active = stage0.active_depth if net.active == cfg else None
    with net.subnet(cfg):
        n_active = net.stages[0].active_depth
    assert n_active >= depth[0]
    assert not any(k.startswith(f"stages.0.blocks.{len(stage0.blocks)}.") for k in slices)
    for j in range(n_active, len(stage0.blocks)):
        assert not any(k.startswith(f"stages.0.blocks.{j}.") for k in slices)


def test_kernel_transform_variant_keeps_the_contract():
    """OFA's learned kernel transform: extra parameters only the elastic machinery uses."""
    torch.manual_seed(0)
    net = timm.create_model("ws_ofa_mbv3_035_32", num_classes=7, kernel_transform=True).eval()
    with torch.no_grad():  # move the matrices off the identity so the transform matters
        for name, p in net.named_parameters():
            if "kernel_transform" in name:
                p.add_(0.05 * torch.randn_like(p))
    elastic_only = net.elastic_only_parameters()
    assert len(elastic_only) == 2 * 20  # 7to5 and 5to3 per elastic block
    params = dict(net.named_parameters())
    n_elastic = sum(params[n].numel() for n in elastic_only)
    assert n_elastic == 20 * (25 * 25 + 9 * 9)  # 706 per layer, as in OFA
    sub = net.extract(net.space.max())
    assert sum(p.numel() for p in sub.parameters()) == sum(p.numel() for p in net.parameters()) - n_elastic
    for cfg in [net.space.min(), *_configs(net, 2, seed=4)]:
        x = _input(net, cfg)
        net.activate(cfg)
        with torch.no_grad():
            torch.testing.assert_close(net.extract(cfg).eval()(x), net(x), atol=1e-5, rtol=0)


def test_deepcopy_gives_an_independent_supernet(model):
    import copy

    _, net = model
    net.activate(net.space.max())
    net.activate(net.space.min())  # fill the per-block actuation plans
    net.activate(net.space.max())
    twin = copy.deepcopy(net)
    cfg = net.space.min()
    twin.activate(cfg)
    x = _input(net, cfg.replace(resolution=net.space["resolution"].choices[0]))
    with torch.no_grad():
        torch.testing.assert_close(twin(x), net.extract(cfg).eval()(x), atol=1e-5, rtol=0)
    assert net.active == net.space.max()
    assert all(s.active_depth == len(s.blocks) for s in net.stages)  # the original did not move


def test_elastic_resolution_resizes_inputs_to_the_active_subnet():
    net = timm.create_model("ws_ofa_mbv3_035_28", num_classes=10).eval()
    assert net.space["resolution"].choices == (16, 20, 24, 28)
    cfg = net.space.min()  # resolution 16
    x = torch.randn(2, 3, 28, 28)
    small = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    with torch.no_grad(), net.subnet(cfg):
        assert net.input_resolution() == 16
        resized, given = net(x), net(small)
    torch.testing.assert_close(resized, given)
    sub = net.extract(cfg)
    with torch.no_grad():
        torch.testing.assert_close(sub(x), resized)
    # fixed-resolution SuperNets run at the size they are given
    fixed = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10)
    assert fixed.input_resolution() is None and fixed.extract(fixed.space.min()).input_resolution() is None

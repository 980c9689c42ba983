"""OFA's published SuperNets (MobileNetV3 w1.0 / w1.2, ProxylessNAS w1.3, ResNet-50) through timm, checked against
the authors' own implementation.

No network: the ``ofa`` package builds OFA's networks, their weights, BN statistics and kernel-transform
matrices are randomised and saved the way OFA publishes them (``torch.save({"state_dict": ...})``), and timm
loads the file with ``pretrained_cfg_overlay=dict(file=...)``. Logits are compared in eval mode on 128-px
inputs (the smallest resolution of the space) for the max, the min and SubNets from OFA's own sampler.
"""

from __future__ import annotations

import json
import os
import random

import pytest
import timm
import torch
from torch import nn

import ws_core  # noqa: F401  (registers the ws_* SuperNets)
from ws_core.ofa import (
    OFA_NETS,
    OFACheckpointError,
    _canonical,
    arch_from_net_config,
    checkpoint_filter_fn,
    from_ofa_arch,
    ofa_key_map,
    to_ofa_arch,
)

pytest.importorskip("ofa", reason="the once-for-all authors' package (ws-core's test extra) builds the reference")
from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3, OFAProxylessNASNets, OFAResNets

W10, W12 = "ofa_mbv3_d234_e346_k357_w1.0", "ofa_mbv3_d234_e346_k357_w1.2"
PXL = "ofa_proxyless_d234_e346_k357_w1.3"
R50 = "ofa_resnet50_d0-1-2_e0.2-0.25-0.35_w0.65-0.8-1.0"
RES = 128


def _ofa_mbv3(width: float) -> OFAMobileNetV3:
    return OFAMobileNetV3(n_classes=1000, dropout_rate=0, width_mult=width, ks_list=[3, 5, 7],
                          expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])


@torch.no_grad()
def _randomise_(net: nn.Module, seed: int) -> nn.Module:
    """Random weights, BN affine parameters and statistics, kernel-transform matrices (identity + noise).

    BN statistics are those of random images through the max SubNet, times random factors: statistics far
    from the activations' make a 20-block network chaotic, and float32 rounding then decides the logits.
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in net.named_parameters():
        if name.endswith("_matrix"):
            p.copy_(torch.eye(p.shape[0]) + 0.1 * torch.randn(p.shape, generator=g))
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    net.set_max_net()
    net.train()
    net(torch.randn(4, 3, RES, RES, generator=g))
    for m in bns:
        m.momentum = 0.1
        m.running_mean.add_(0.1 * torch.randn(m.running_mean.shape, generator=g))
        m.running_var.mul_(0.8 + 0.4 * torch.rand(m.running_var.shape, generator=g))
        m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (), generator=g)))
    return net.eval()


def _save_as_ofa_publishes(net: nn.Module, path) -> str:
    torch.save({"state_dict": net.state_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def w10(tmp_path_factory):
    """(OFA's w1.0 network with random weights, its file, the ws SuperNet timm loaded from that file)."""
    ofa = _randomise_(_ofa_mbv3(1.0), seed=0)
    path = _save_as_ofa_publishes(ofa, tmp_path_factory.mktemp("ofa") / W10)
    net = timm.create_model("ws_ofa_mbv3_100.ofa_in1k", pretrained=True, pretrained_cfg_overlay=dict(file=path))
    yield ofa, path, net.eval()
    os.remove(path)  # 30-180 MB files: not kept in pytest's retained temporary folders


@pytest.fixture(scope="module")
def w12(tmp_path_factory):
    ofa = _randomise_(_ofa_mbv3(1.2), seed=1)
    path = _save_as_ofa_publishes(ofa, tmp_path_factory.mktemp("ofa") / W12)
    yield ofa, path
    os.remove(path)


@pytest.fixture
def ofa_random():
    """OFA's sampler draws from Python's global ``random``: seed it, then restore the caller's state."""
    state = random.getstate()
    random.seed(0)
    yield
    random.setstate(state)


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, RES, RES, generator=torch.Generator().manual_seed(seed))


def _assert_same_logits(ofa: nn.Module, net, arch: dict) -> None:
    ofa.set_active_subnet(ks=arch["ks"], e=arch["e"], d=arch["d"])
    cfg = net.activate(from_ofa_arch(net, arch, resolution=RES))
    assert cfg["resolution"] == RES
    x = _x()
    with torch.no_grad():
        expected, got = ofa(x), net(x)
    error = ((got - expected).abs().max() / expected.abs().max()).item()
    assert error <= 1e-4, f"relative max error {error:.2e} for {arch}"


MAX = {"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5}
MIN = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5}


# Key names ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "width"), [("ws_ofa_mbv3_100", 1.0), ("ws_ofa_mbv3_120", 1.2)])
def test_every_ofa_tensor_has_exactly_one_ws_tensor_of_its_shape(model, width):
    ofa = _ofa_mbv3(width).state_dict()
    net = timm.create_model(f"{model}.ofa_in1k")
    own = net.state_dict()
    mapping = ofa_key_map(net)
    assert set(mapping) == set(own)
    assert len(set(mapping.values())) == len(mapping)  # one OFA name per ws tensor
    ofa_by_canonical = {_canonical(k): v for k, v in ofa.items()}
    assert set(mapping.values()) == set(ofa_by_canonical)  # and every OFA tensor is used
    for ws_key, ofa_key in mapping.items():
        assert own[ws_key].shape == ofa_by_canonical[ofa_key].shape, (ws_key, ofa_key)
    assert sum(k.endswith("_matrix") for k in ofa) == len(net.elastic_only_parameters()) == 40


def test_older_ofa_key_spellings_convert_alike(w10):
    ofa, _, net = w10
    modern = ofa.state_dict()
    # OFA's load_state_dict accepts files with `mobile_inverted_conv` and un-nested `.bn.` / `.conv.weight` names
    legacy = {k.replace(".conv.inverted_bottleneck.", ".mobile_inverted_conv.inverted_bottleneck.")
              .replace(".conv.depth_conv.", ".mobile_inverted_conv.depth_conv.")
              .replace(".conv.point_linear.", ".mobile_inverted_conv.point_linear.")
              .replace(".bn.bn.", ".bn.").replace(".conv.conv.weight", ".conv.weight"): v for k, v in modern.items()}
    assert set(legacy) != set(modern)
    a, b = checkpoint_filter_fn(modern, net), checkpoint_filter_fn({"state_dict": legacy}, net)
    assert a.keys() == b.keys() and all(a[k] is b[k] for k in a)


# Logits equal OFA's -----------------------------------------------------------------------------------
def test_w10_logits_equal_ofa_for_max_min_and_ofa_sampled_subnets(w10, ofa_random):
    ofa, _, net = w10
    assert net.pretrained_cfg["tag"] == "ofa_in1k" and len(net.elastic_only_parameters()) == 40
    archs = [MAX, MIN] + [ofa.sample_active_subnet() for _ in range(4)]
    assert len({str(a) for a in archs}) == 6
    for arch in archs:
        _assert_same_logits(ofa, net, arch)
    # ws-sampled SubNets through to_ofa_arch (None for skipped blocks: OFA's set_active_subnet skips them)
    g = torch.Generator().manual_seed(5)
    for _ in range(2):
        cfg = net.space.sample(g).replace(resolution=RES)
        arch = to_ofa_arch(net, cfg)
        assert from_ofa_arch(net, arch) == cfg
        _assert_same_logits(ofa, net, arch)


def test_w12_logits_equal_ofa(w12, ofa_random):
    ofa, path = w12
    net = timm.create_model("ws_ofa_mbv3_120.ofa_in1k", pretrained=True,
                            pretrained_cfg_overlay=dict(file=path)).eval()
    for arch in [MAX, MIN, ofa.sample_active_subnet()]:
        _assert_same_logits(ofa, net, arch)


def test_extracted_subnet_equals_ofa_get_active_subnet(w10, ofa_random):
    ofa, _, net = w10
    arch = ofa.sample_active_subnet()
    ofa.set_active_subnet(**arch)
    sub = net.extract(from_ofa_arch(net, arch, resolution=RES)).eval()
    reference = ofa.get_active_subnet(preserve_weight=True).eval()
    with torch.no_grad():
        expected, got = reference(_x(1)), sub(_x(1))
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 1e-4
    assert sum(p.numel() for p in sub.parameters()) == sum(p.numel() for p in reference.parameters())


def test_url_download_goes_through_timm_hub_loader_with_weights_only(w10, monkeypatch):
    _, path, loaded = w10
    calls = []

    def offline_load_state_dict_from_url(url, **kwargs):  # stands in for torch.hub's download + torch.load
        calls.append((url, kwargs))
        return torch.load(path, map_location="cpu", weights_only=True)  # the file's dict, {"state_dict": ...}

    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", offline_load_state_dict_from_url)
    net = timm.create_model("ws_ofa_mbv3_100.ofa_in1k", pretrained=True)
    assert [url for url, _ in calls] == [OFA_NETS[W10].url]
    assert calls[0][1]["weights_only"] is True
    own, ref = net.state_dict(), loaded.state_dict()
    assert own.keys() == ref.keys() and all(torch.equal(own[k], ref[k]) for k in own)


def test_new_head_keeps_the_backbone(w10):
    _, path, loaded = w10
    net = timm.create_model("ws_ofa_mbv3_100.ofa_in1k", pretrained=True, num_classes=10,
                            pretrained_cfg_overlay=dict(file=path))
    assert net.get_classifier().out_features == 10
    assert torch.equal(net.stages[4].blocks[3].conv_dw.kernel_transform["7to5"],
                       loaded.stages[4].blocks[3].conv_dw.kernel_transform["7to5"])
    feats = timm.create_model("ws_ofa_mbv3_100.ofa_in1k", pretrained=True, features_only=True,
                              pretrained_cfg_overlay=dict(file=path))
    assert torch.equal(feats.model.stages[0].blocks[0].conv_pw.weight, loaded.stages[0].blocks[0].conv_pw.weight)


# Wrong files -------------------------------------------------------------------------------------------
def _snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def _unchanged(net, before) -> bool:
    return all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def _load(net, path, **overlay):
    timm.models.load_pretrained(net, pretrained_cfg=dict(net.pretrained_cfg, file=str(path), **overlay),
                                filter_fn=checkpoint_filter_fn)


def _assert_rejected(model: str, path, message: str) -> None:
    """Loading ``path`` into ``model`` raises OFACheckpointError matching ``message`` and changes nothing."""
    net = timm.create_model(model)
    before = _snapshot(net)
    with pytest.raises(OFACheckpointError, match=message):
        _load(net, path)
    assert _unchanged(net, before)


def test_w12_file_into_w10_model_fails_naming_shapes_and_leaves_model_untouched(w12):
    _, path = w12
    _assert_rejected("ws_ofa_mbv3_100.ofa_in1k", path,
                     r"(?s)does not fit ws_ofa_mbv3_100 \(which takes OFA's ofa_mbv3_d234_e346_k357_w1\.0\).*"
                     r"shape mismatches \(\d+\): \['first_conv\.conv\.weight: file \(24, 3, 3, 3\) != model "
                     r"\(16, 3, 3, 3\)")
    with pytest.raises(OFACheckpointError, match="shape mismatches"):
        timm.create_model("ws_ofa_mbv3_100.ofa_in1k", pretrained=True, pretrained_cfg_overlay=dict(file=path))


def test_random_dict_fails_naming_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "random.pth"
    torch.save({"state_dict": {"foo.weight": torch.randn(3), "bar": torch.randn(2, 2)}}, path)
    net = timm.create_model("ws_ofa_mbv3_100.ofa_in1k")
    before = _snapshot(net)
    with pytest.raises(RuntimeError, match=r"(?s)model left unchanged.*missing keys \(475\).*"
                                           r"unexpected keys \(2\): \['bar', 'foo.weight'\]"):
        _load(net, path)
    assert _unchanged(net, before)
    # an OFA file with tensors missing: named in OFA's spelling
    ofa = _ofa_mbv3(1.0).state_dict()
    del ofa["blocks.5.conv.depth_conv.se.fc.reduce.bias"], ofa["feature_mix_layer.conv.weight"]
    torch.save({"state_dict": ofa}, path)
    with pytest.raises(OFACheckpointError, match=r"missing \(2\): \['blocks\.5\.conv\.depth_conv\.se\.fc\.reduce"
                                                 r"\.bias', 'feature_mix_layer\.conv\.weight'\]"):
        _load(net, path)
    assert _unchanged(net, before)


def test_ofa_file_into_a_supernet_without_kernel_transform_says_how_to_build_it(w10):
    _, path, _ = w10
    net = timm.create_model("ws_ofa_mbv3_100")  # the bare name: a SuperNet to train, plain centre crop
    assert net.elastic_only_parameters() == [] and net.pretrained_cfg.get("tag") is None
    with pytest.raises(OFACheckpointError, match=r"(?s)unexpected \(40\).*7to5_matrix.*kernel_transform=True"):
        _load(net, path)
    explicit = timm.create_model("ws_ofa_mbv3_100.ofa_in1k", kernel_transform=False)  # explicit settings win
    assert explicit.elastic_only_parameters() == []


_UNPICKLED: list[str] = []


class _Payload:
    def __reduce__(self):  # unpickling this object would call _UNPICKLED.append("unpickled")
        return (_UNPICKLED.append, ("unpickled",))


def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"state_dict": {"first_conv.conv.weight": torch.zeros(16, 3, 3, 3)}, "x": _Payload()}, f)
    # timm's torch.load(weights_only=True) refuses the pickled call (and says so) instead of running it
    with pytest.raises(RuntimeError, match="weights_only=True blocked loading"):
        timm.create_model("ws_ofa_mbv3_100.ofa_in1k", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert _UNPICKLED == []


# pretrained cfgs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "net_id"), [("ws_ofa_mbv3_100", W10), ("ws_ofa_mbv3_120", W12),
                                             ("ws_ofa_proxyless_130", PXL)])
def test_ofa_in1k_pretrained_cfg(name, net_id):
    cfg = timm.get_pretrained_cfg(f"{name}.ofa_in1k").to_dict()
    assert cfg["url"] == f"https://raw.githubusercontent.com/han-cai/files/master/ofa/ofa_nets/{net_id}"
    assert cfg["num_classes"] == 1000 and cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 0.875
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert cfg["license"] == "mit" and cfg["origin_url"] == "https://github.com/mit-han-lab/once-for-all"
    assert f"{name}.ofa_in1k" in timm.list_models("ws_*", pretrained=True)
    assert timm.get_pretrained_cfg(name).tag is None  # the bare name stays the untagged SuperNet to train
    assert OFA_NETS[net_id].model == name


# Arch dicts --------------------------------------------------------------------------------------------
def test_arch_round_trip_and_special_subnets():
    net = timm.create_model("ws_ofa_mbv3_100")
    space = net.space
    assert from_ofa_arch(space, {**MAX, "r": [224]}) == space.max()
    assert from_ofa_arch(net, {**MIN, "r": 128}) == space.min()
    assert from_ofa_arch(space, MAX) == space.max()  # no r: the largest resolution
    assert from_ofa_arch(space, {**MIN, "image_size": 128, "wid": None}) == space.min()
    # skipped blocks: any choice, 0 (OFA's arch encoder) or None; the canonical config drops them
    skipped = {"ks": [3, 3, 0, None] * 5, "e": [3, 3, 6, 0] * 5, "d": [2] * 5, "r": [128]}
    assert from_ofa_arch(space, skipped) == space.min()
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        cfg = space.sample(g)
        arch = to_ofa_arch(space, cfg)
        assert len(arch["ks"]) == len(arch["e"]) == 20 and len(arch["d"]) == 5 and arch["r"] == [cfg["resolution"]]
        assert from_ofa_arch(space, arch) == cfg


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ks": [4] + [3] * 19}, r"field 'ks'\[0\] allows \[3, 5, 7\], got 4"),
        ({"e": [3] * 19}, r"field 'e' needs 20 values \(one per block\), got 19"),
        ({"d": [2, 2, 5, 2, 2]}, r"field 'd'\[2\] allows \[2, 3, 4\], got 5"),
        ({"d": "22222"}, r"field 'd' needs a list of 5 values"),
        ({"r": [100]}, r"field 'r' allows \[128, 132, .*, 224\], got \[100\]"),
        ({"image_size": 226}, r"field 'image_size' allows \[128, .*224\], got 226"),
        ({"ks": [3, 3, 9, 3] * 5}, r"field 'ks'\[2\] \(a skipped block\) allows \[3, 5, 7\], got 9"),
        ({"wid": 1}, r"field 'wid' allows \[None\], got 1"),
        ({"w": [0] * 6}, r"unknown field\(s\) \['w'\]; allowed \['ks', 'e', 'd', 'r', 'image_size', 'wid'\]"),
        ({"d": None}, r"field 'd' needs a list of 5 values \(one per stage\), got None"),
    ],
)
def test_invalid_arch_names_field_allowed_values_and_value(change, message):
    space = timm.create_model("ws_ofa_mbv3_100").space
    with pytest.raises(ValueError, match=message):
        from_ofa_arch(space, {**MIN, **change})
    with pytest.raises(ValueError, match=r"missing field\(s\) \['d'\]"):
        from_ofa_arch(space, {"ks": MIN["ks"], "e": MIN["e"]})


# ResNet-50 ---------------------------------------------------------------------------------------------
def _ofa_resnet50() -> OFAResNets:
    return OFAResNets(n_classes=1000, dropout_rate=0, depth_list=[0, 1, 2], expand_ratio_list=[0.2, 0.25, 0.35],
                      width_mult_list=[0.65, 0.8, 1.0])


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    ofa = _randomise_(_ofa_resnet50(), seed=2)
    path = _save_as_ofa_publishes(ofa, tmp_path_factory.mktemp("ofa") / R50)
    net = timm.create_model("ws_ofa_resnet50.ofa_in1k", pretrained=True, pretrained_cfg_overlay=dict(file=path))
    os.remove(path)
    return ofa, net.eval()


R50_MAX = {"d": [2] * 5, "e": [0.35] * 18, "w": [2] * 6}
R50_MIN = {"d": [0] * 5, "e": [0.2] * 18, "w": [0] * 6}


def _assert_same_resnet_logits(ofa: nn.Module, net, arch: dict) -> None:
    ofa.set_active_subnet(d=arch["d"], e=arch["e"], w=arch["w"])
    net.activate(from_ofa_arch(net, arch, resolution=RES))
    x = _x(3)
    with torch.no_grad():
        expected, got = ofa(x), net(x)
    error = ((got - expected).abs().max() / expected.abs().max()).item()
    assert error <= 1e-4, f"relative max error {error:.2e} for {arch}"


def test_resnet50_tensors_map_one_to_one(r50):
    ofa = {_canonical(k): v for k, v in r50[0].state_dict().items()}
    net = r50[1]
    own, mapping = net.state_dict(), ofa_key_map(net)
    assert set(mapping) == set(own) and len(set(mapping.values())) == len(mapping) == len(ofa) == 368
    assert set(mapping.values()) == set(ofa)
    assert all(own[k].shape == ofa[v].shape for k, v in mapping.items())


def test_resnet50_logits_equal_ofa(r50, ofa_random):
    ofa, net = r50
    archs = [R50_MAX, R50_MIN] + [ofa.sample_active_subnet() for _ in range(3)]
    for arch in archs:
        _assert_same_resnet_logits(ofa, net, arch)
    g = torch.Generator().manual_seed(7)
    cfg = net.space.sample(g).replace(resolution=RES, stem_depth=1)
    arch = to_ofa_arch(net, cfg)
    assert from_ofa_arch(net, arch) == cfg
    _assert_same_resnet_logits(ofa, net, arch)


def test_resnet50_every_ofa_subnet_is_one_ws_subnet(r50):
    """OFA's input stem: d[0] ∈ {0, 1} both skip the residual conv (only the largest runs it), and width indices
    0 and 1 of the stem's middle conv both give 24 channels: those OFA dicts are one network and one config."""
    ofa, net = r50
    base = {"d": [2, 1, 0, 2, 1], "e": [0.25] * 18, "w": [2, 1, 0, 1, 2, 0], "r": [RES]}
    same = [{**base, "d": [d0, *base["d"][1:]], "w": [w0, *base["w"][1:]]} for d0 in (0, 1) for w0 in (0, 1)]
    configs = {from_ofa_arch(net, a) for a in same}
    assert len(configs) == 1
    (cfg,) = configs
    assert cfg["stem_depth"] == 0 and cfg["stem_mid_width"] == 0.65
    logits = []
    for a in same:
        ofa.set_active_subnet(d=a["d"], e=a["e"], w=a["w"])
        with torch.no_grad():
            logits.append(ofa(_x(4)))
    assert all(torch.equal(t, logits[0]) for t in logits[1:])  # OFA computes one network for the four dicts
    assert from_ofa_arch(net, base)["stem_depth"] == 1 and from_ofa_arch(net, base)["stem_mid_width"] == 1.0
    # and distinct ws choices are distinct networks: every stem choice has its own channel count
    for dim, channels in (("stem_mid_width", net._stem_mid), ("stem_width", net._stem_widths)):
        choices = net.space[dim].choices
        assert len({channels[c] for c in choices}) == len(choices) == len(set(channels.values()))
    assert net.space["stem_depth"].choices == (0, 1)


def test_resnet50_pretrained_cfg_and_invalid_arch(r50):
    cfg = timm.get_pretrained_cfg("ws_ofa_resnet50.ofa_in1k").to_dict()
    assert cfg.get("url") is None and "drive.google.com" in cfg["notes"][0]  # timm cannot fetch Google Drive
    assert cfg["num_classes"] == 1000 and cfg["input_size"] == (3, 224, 224) and cfg["license"] == "mit"
    assert OFA_NETS[R50].model == "ws_ofa_resnet50"
    space = r50[1].space
    for change, message in [
        ({"w": [0, 0, 3, 0, 0, 0]}, r"'w'\[2\] \(an index into \[0\.65, 0\.8, 1\.0\]\) allows \[0, 1, 2\], got 3"),
        ({"d": [3, 0, 0, 0, 0]}, r"field 'd'\[0\] allows \[0, 1, 2\], got 3"),
        ({"d": [0] * 4}, r"field 'd' needs 5 values \(one per stage, input stem first\), got 4"),
        ({"e": [0.2] * 17}, r"field 'e' needs 18 values"),
        ({"e": [0.3] + [0.2] * 17}, r"field 'e'\[0\] allows \[0\.2, 0\.25, 0\.35\], got 0\.3"),
        ({"ks": [3] * 18}, r"unknown field\(s\) \['ks'\]; allowed \['d', 'e', 'w', 'r', 'image_size'\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            from_ofa_arch(space, {**R50_MIN, **change})
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        cfg = space.sample(g)
        assert from_ofa_arch(space, to_ofa_arch(space, cfg)) == cfg


# ProxylessNAS w1.3 -------------------------------------------------------------------------------------
def _ofa_proxyless() -> OFAProxylessNASNets:
    return OFAProxylessNASNets(n_classes=1000, dropout_rate=0, width_mult=1.3, ks_list=[3, 5, 7],
                               expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])


@pytest.fixture(scope="module")
def proxyless(tmp_path_factory):
    """(OFA's ProxylessNAS w1.3 with random weights, its file, the ws SuperNet timm loaded from that file)."""
    ofa = _randomise_(_ofa_proxyless(), seed=3)
    path = _save_as_ofa_publishes(ofa, tmp_path_factory.mktemp("ofa") / PXL)
    net = timm.create_model("ws_ofa_proxyless_130.ofa_in1k", pretrained=True, pretrained_cfg_overlay=dict(file=path))
    yield ofa, path, net.eval()
    os.remove(path)


# OFA's set_max_net: d=4 everywhere (the single-block last stage runs min(1, d) blocks); its sampler: d[5] = 1
PXL_MAX = {"ks": [7] * 21, "e": [6] * 21, "d": [4] * 6}
PXL_MIN = {"ks": [3] * 21, "e": [3] * 21, "d": [2] * 5 + [1]}


def _n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_proxyless_tensors_map_one_to_one(proxyless):
    ofa, _, net = proxyless
    ofa_sd = {_canonical(k): v for k, v in ofa.state_dict().items()}
    own, mapping = net.state_dict(), ofa_key_map(net)
    assert set(mapping) == set(own) and len(set(mapping.values())) == len(mapping) == len(ofa_sd) == 446
    assert set(mapping.values()) == set(ofa_sd)
    assert all(own[k].shape == ofa_sd[v].shape for k, v in mapping.items())
    assert len(net.elastic_only_parameters()) == sum(k.endswith("_matrix") for k in ofa_sd) == 2 * 21
    assert _n_params(net) == _n_params(ofa) == 7_956_882
    assert net.space.stage_blocks == (4, 4, 4, 4, 4, 1) and net.space.max()["depth"] == (4, 4, 4, 4, 4, None)
    assert net.space.size() == (9**2 + 9**3 + 9**4) ** 5 * 9 * 25


def test_proxyless_logits_and_parameter_counts_equal_ofa(proxyless, ofa_random):
    ofa, _, net = proxyless
    assert net.pretrained_cfg["tag"] == "ofa_in1k"
    archs = [PXL_MAX, PXL_MIN] + [ofa.sample_active_subnet() for _ in range(3)]
    assert len({str(a) for a in archs}) == 5 and all(len(a["d"]) == 6 for a in archs)
    for arch in archs:
        _assert_same_logits(ofa, net, arch)
    g = torch.Generator().manual_seed(6)
    cfg = net.space.sample(g).replace(resolution=RES)
    arch = to_ofa_arch(net, cfg)
    assert arch["d"][5] == 1 and from_ofa_arch(net, arch) == cfg
    _assert_same_logits(ofa, net, arch)
    # the max and min SubNets as standalone networks: OFA's get_active_subnet and ws-core's extract
    for arch, n_params in ((PXL_MAX, 7_942_056), (PXL_MIN, 3_718_832)):
        ofa.set_active_subnet(ks=arch["ks"], e=arch["e"], d=arch["d"])
        reference = ofa.get_active_subnet(preserve_weight=True).eval()
        sub = net.extract(from_ofa_arch(net, arch, resolution=RES)).eval()
        assert _n_params(sub) == _n_params(reference) == n_params
        with torch.no_grad():
            expected, got = reference(_x(2)), sub(_x(2))
        assert ((got - expected).abs().max() / expected.abs().max()).item() <= 1e-4


def test_proxyless_url_download_goes_through_timm_hub_loader(proxyless, monkeypatch):
    _, path, loaded = proxyless
    calls = []

    def offline_load_state_dict_from_url(url, **kwargs):
        calls.append((url, kwargs))
        return torch.load(path, map_location="cpu", weights_only=True)

    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", offline_load_state_dict_from_url)
    net = timm.create_model("ws_ofa_proxyless_130.ofa_in1k", pretrained=True)
    assert [url for url, _ in calls] == [OFA_NETS[PXL].url] and calls[0][1]["weights_only"] is True
    assert OFA_NETS[PXL].url == "https://raw.githubusercontent.com/han-cai/files/master/ofa/ofa_nets/" + PXL
    own, ref = net.state_dict(), loaded.state_dict()
    assert own.keys() == ref.keys() and all(torch.equal(own[k], ref[k]) for k in own)


def test_mbv3_file_into_proxyless_and_back_fails_naming_the_mismatch(proxyless, w10):
    _, pxl_path, _ = proxyless
    _, mbv3_path, _ = w10
    _assert_rejected("ws_ofa_proxyless_130.ofa_in1k", mbv3_path,
                     r"(?s)does not fit ws_ofa_proxyless_130 \(which takes OFA's ofa_proxyless_d234_e346_k357_w1\.3\)"
                     r".*missing \(21\): \['blocks\.21\.conv\..*unexpected \(\d+\): \['blocks\.\d+\.conv\.depth_conv"
                     r"\.se\..*shape mismatches \(\d+\): \['first_conv\.conv\.weight: file \(16, 3, 3, 3\) != model "
                     r"\(40, 3, 3, 3\)")
    _assert_rejected("ws_ofa_mbv3_100.ofa_in1k", pxl_path,
                     r"(?s)does not fit ws_ofa_mbv3_100 .*missing \(53\): \['blocks\.5\.conv\.depth_conv\.se\..*"
                     r"unexpected \(25\): \['blocks\.21\.conv\.")


def test_proxyless_arch_dicts():
    space = timm.create_model("ws_ofa_proxyless_130").space
    assert from_ofa_arch(space, PXL_MAX) == space.max()
    assert from_ofa_arch(space, {**PXL_MIN, "r": [128]}) == space.min()
    # the last stage always runs its one block: OFA's d[5] of 1 (sampler), 4 (set_max_net) or None are one SubNet
    assert from_ofa_arch(space, {**PXL_MIN, "d": [2] * 5 + [None], "r": [128]}) == space.min()
    assert to_ofa_arch(space, space.max())["d"] == [4] * 5 + [1]
    for change, message in [
        ({"d": [2] * 5 + [0]}, r"field 'd'\[5\] \(a stage of fixed depth 1\) allows \[1, 2, 3, 4\], got 0"),
        ({"d": [2] * 5}, r"field 'd' needs 6 values \(one per stage\), got 5"),
        ({"ks": [3] * 20}, r"field 'ks' needs 21 values"),
        ({"e": [3] * 20 + [5]}, r"field 'e'\[20\] allows \[3, 4, 6\], got 5"),
    ]:
        with pytest.raises(ValueError, match=message):
            from_ofa_arch(space, {**PXL_MIN, **change})
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        cfg = space.sample(g)
        assert from_ofa_arch(space, to_ofa_arch(space, cfg)) == cfg


# OFA's net.config (the form its specialised SubNets are published in) ----------------------------------
@pytest.mark.parametrize(("build", "model"), [(lambda: _ofa_mbv3(1.0), "ws_ofa_mbv3_100"),
                                              (lambda: _ofa_mbv3(1.2), "ws_ofa_mbv3_120"),
                                              (_ofa_proxyless, "ws_ofa_proxyless_130")])
def test_net_config_of_ofa_extracted_subnets_parses_back_to_the_sampled_arch(build, model, ofa_random):
    """OFA's own ``get_active_subnet().config``, through JSON, gives back the SubNet OFA's sampler drew."""
    ofa = build()
    net = timm.create_model(model)
    for _ in range(5):
        arch = ofa.sample_active_subnet()
        ofa.set_active_subnet(**arch)
        net_config = json.loads(json.dumps(ofa.get_active_subnet(preserve_weight=False).config))
        net_id, parsed = arch_from_net_config(net_config, image_size=160)
        assert OFA_NETS[net_id].model == model
        assert from_ofa_arch(net, parsed) == from_ofa_arch(net, arch, resolution=160)

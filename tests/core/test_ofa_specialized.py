"""OFA's published specialised SubNets: the table, the net.config parser, lookups and errors (no network)."""

from __future__ import annotations

import copy

import pytest
import timm

import ws_core  # noqa: F401  (registers the ws_* SuperNets)
from ws_core.cost import count_params
from ws_core.ofa import OFA_NETS, OFA_SPECIALIZED, arch_from_net_config, from_ofa_arch, ofa_specialized


@pytest.fixture(scope="module")
def supernets():
    return {net.model: timm.create_model(net.model) for net in OFA_NETS.values() if net.model != "ws_ofa_resnet50"}


def test_every_specialised_subnet_is_a_ws_subnet_with_ofa_parameter_count(supernets):
    """The table's arch dicts, mapped into the SuperNet they come from, give networks exactly as large as
    OFA's own network built from the published net.config (counted when the table was written)."""
    assert len(OFA_SPECIALIZED) == 50
    by_model = {}
    for spec in OFA_SPECIALIZED.values():
        net = supernets[spec.model]
        r = min(spec.image_size, max(net.space["resolution"].choices))
        assert count_params(net, spec.config(net, resolution=r)) == spec.params, spec.name
        by_model[spec.model] = by_model.get(spec.model, 0) + 1
    assert by_model == {"ws_ofa_mbv3_100": 24, "ws_ofa_mbv3_120": 10, "ws_ofa_proxyless_130": 16}


def test_lookup_by_either_spelling_and_fields(supernets):
    spec = ofa_specialized("LG-G8_lat@24ms_top1@76.4_finetune@25")
    assert ofa_specialized("LG-G8_lat-24ms_top1-76.4_finetune-25") is spec  # the folder spelling
    assert (spec.target, spec.top1, spec.finetune_epochs, spec.image_size) == ("LG-G8_lat@24ms", 76.4, 25, 220)
    assert spec.model == "ws_ofa_mbv3_100" and spec.net_id == "ofa_mbv3_d234_e346_k357_w1.0"
    cfg = spec.config(supernets[spec.model])
    assert cfg["resolution"] == 220
    # skipped block slots of a stage are None in the arch, and the depth is the stage's block count
    n = 0
    for d in spec.arch["d"]:
        assert all(k is not None for k in spec.arch["ks"][n:n + d])
        assert all(k is None for k in spec.arch["ks"][n + d:n + 4])
        n += 4


def test_unknown_name_lists_the_names():
    with pytest.raises(ValueError, match=r"unknown OFA specialised SubNet 'cpu_lat@1ms'; allowed \['1080ti"):
        ofa_specialized("cpu_lat@1ms")


def test_resolution_beyond_the_supernet_needs_an_explicit_one(supernets):
    spec = ofa_specialized("flops@595M_top1@80.0_finetune@75")
    net = supernets[spec.model]
    with pytest.raises(ValueError, match=r"allowed \[128, .*224\], got 236\. OFA evaluates flops@595M.* at 236 px"):
        spec.config(net)
    assert spec.config(net, resolution=224)["resolution"] == 224
    with pytest.raises(ValueError, match=r"allowed \[128, .*224\], got 230$"):
        spec.config(net, resolution=230)


def _conv(cin, cout, k, s, e):
    return {"name": "MBConvLayer", "in_channels": cin, "out_channels": cout, "kernel_size": k, "stride": s,
            "expand_ratio": e}


def _net_config(depths=(2, 3, 4, 2, 3), widths=(24, 40, 80, 112, 160), strides=(2, 2, 2, 1, 2)):
    """A MobileNetV3 w1.0 net.config in OFA's layout; block i of a stage has kernel 3 + 2·(i % 3) and expand
    ratio [3, 4, 6, 3][i % 4]."""
    blocks = [{"name": "ResidualBlock", "conv": _conv(16, 16, 3, 1, 1), "shortcut": None}]
    cin = 16
    for d, w, s in zip(depths, widths, strides):
        for i in range(d):
            blocks.append({"name": "ResidualBlock", "conv": _conv(cin, w, 3 + 2 * (i % 3), s if i == 0 else 1,
                                                                  [3, 4, 6, 3][i % 4])})
            cin = w
    return {"name": "MobileNetV3", "first_conv": {"out_channels": 16}, "blocks": blocks}


def test_net_config_parsed_by_hand():
    net_id, arch = arch_from_net_config(_net_config(), image_size=176)
    assert net_id == "ofa_mbv3_d234_e346_k357_w1.0"
    assert arch["d"] == [2, 3, 4, 2, 3] and arch["r"] == [176]
    assert arch["ks"][:8] == [3, 5, None, None, 3, 5, 7, None]
    assert arch["e"][8:12] == [3, 4, 6, 3]
    # older spelling of the block entry, as OFA's ProxylessNAS configs write it
    old = copy.deepcopy(_net_config())
    for b in old["blocks"]:
        b["mobile_inverted_conv"] = b.pop("conv")
    assert arch_from_net_config(old, image_size=176) == (net_id, arch)
    net = timm.create_model("ws_ofa_mbv3_100")
    assert list(from_ofa_arch(net, arch)["depth"]) == [2, 3, 4, 2, 3]


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.update(name="ResNets"), r"no published OFA SuperNet matches; allowed \['MobileNetV3 with a first "
                                         r"conv of 16 channels', .*got 'ResNets' with a first conv of 16 channels"),
    (lambda c: c["first_conv"].update(out_channels=32), r"got 'MobileNetV3' with a first conv of 32 channels"),
    (lambda c: c["blocks"].pop(-1), None),  # still valid: the last stage has 2 blocks
    (lambda c: c["blocks"][4]["conv"].update(stride=2), r"has 5 stages after the first block, got 6"),
    (lambda c: c["blocks"][0]["conv"].update(expand_ratio=3), r"blocks\[0\] must be the fixed first block"),
    (lambda c: c["blocks"][3].pop("conv"), r"blocks\[3\] is not an inverted-residual block"),
    (lambda c: c.pop("blocks"), r"needs 'first_conv' \(with 'out_channels'\) and 'blocks'"),
])
def test_invalid_net_config_says_what_does_not_fit(change, message):
    config = _net_config()
    change(config)
    if message is None:
        assert arch_from_net_config(config)[1]["d"] == [2, 3, 4, 2, 2]
    else:
        with pytest.raises(ValueError, match=message):
            arch_from_net_config(config)


def test_too_many_blocks_in_a_stage():
    with pytest.raises(ValueError, match=r"stage 2 of ofa_mbv3_d234_e346_k357_w1.0 has at most 4 blocks, got 5"):
        arch_from_net_config(_net_config(depths=(2, 3, 5, 2, 3)))

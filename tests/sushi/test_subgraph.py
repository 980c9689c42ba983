"""SubGraphs: intersections, sizes and fetch bytes, by hand and on ws_ofa_mbv3_035_32."""

from __future__ import annotations

import pytest

from ws_core import CostModel
from ws_sushi.subgraph import (
    SubGraph,
    common_subgraph,
    fetch_bytes,
    intersect_region,
    region_numel,
    subnet_subgraph,
    supernet_subgraph,
)


def test_region_arithmetic():
    a = (slice(0, 4), slice(0, 3))
    b = (slice(1, 6), slice(0, 2))
    assert region_numel(a) == 12
    assert region_numel(()) == 1
    assert intersect_region(a, b) == (slice(1, 4), slice(0, 2))
    assert intersect_region((slice(0, 2),), (slice(2, 5),)) is None  # touching, not overlapping
    with pytest.raises(ValueError, match="same rank"):
        intersect_region(a, (slice(0, 1),))


def test_sizes_by_hand():
    g = SubGraph({"w": [[0, 4], [0, 3]], "b": [[0, 4]]})
    assert g.numel() == 16
    assert g.tensor_bytes(8) == {"w": 12, "b": 4}
    assert g.tensor_bytes(3) == {"w": 5, "b": 2}  # 36 bits -> 5 bytes, 12 bits -> 2 bytes (per-tensor rounding)
    assert g.nbytes(3) == 7
    assert g.nbytes(32) == 64
    with pytest.raises(ValueError, match=r"bits must be an int in \[1, 32\], got 0"):
        g.nbytes(0)


def test_intersection_and_common_by_hand():
    a = SubGraph({"w": [[0, 4], [0, 3]], "b": [[0, 4]], "only_a": [[0, 2]]})
    b = SubGraph({"w": [[0, 2], [0, 5]], "b": [[0, 8]]})
    c = SubGraph({"w": [[0, 3], [0, 3]], "b": [[0, 1]]})
    ab = a & b
    assert ab == SubGraph({"w": [[0, 2], [0, 3]], "b": [[0, 4]]})  # only_a is not shared
    assert common_subgraph([a, b, c]) == SubGraph({"w": [[0, 2], [0, 3]], "b": [[0, 1]]})
    assert ab.issubset(a) and ab.issubset(b) and not a.issubset(b)
    with pytest.raises(ValueError, match="at least one"):
        common_subgraph([])


def test_centre_crops_intersect_to_the_smaller_kernel():
    k7 = SubGraph({"dw": [[0, 8], [0, 1], [0, 7], [0, 7]]})
    k5 = SubGraph({"dw": [[0, 16], [0, 1], [1, 6], [1, 6]]})
    k3 = SubGraph({"dw": [[0, 4], [0, 1], [2, 5], [2, 5]]})
    assert common_subgraph([k7, k5]) == SubGraph({"dw": [[0, 8], [0, 1], [1, 6], [1, 6]]})
    assert common_subgraph([k7, k5, k3]).numel() == 4 * 9


def test_fetch_bytes_by_hand():
    subnet = SubGraph({"w": [[0, 4], [0, 4]], "b": [[0, 4]]})           # 16 + 4 elements
    cache = SubGraph({"w": [[0, 2], [0, 4]], "other": [[0, 100]]})      # holds 8 of w, nothing of b
    assert fetch_bytes(subnet, None, 8) == 20
    assert fetch_bytes(subnet, cache, 8) == 12
    assert fetch_bytes(subnet, cache, 4) == (8 + 2) - 4                  # w 8 B - 4 B cached, b 2 B
    assert fetch_bytes(subnet, SubGraph({"other": [[0, 5]]}), 8) == 20   # unrelated cache saves nothing
    assert fetch_bytes(subnet, subnet, 8) == 0


def test_validation_and_serialisation():
    with pytest.raises(ValueError, match="start < stop"):
        SubGraph({"w": [[3, 3]]})
    with pytest.raises(ValueError, match="step 1"):
        SubGraph({"w": (slice(0, 4, 2),)})
    with pytest.raises(ValueError, match="must be ints"):
        SubGraph({"w": [[0, 2.5]]})
    g = SubGraph({"w": [[0, 4], [1, 3]]})
    assert SubGraph.from_json(g.to_json()) == g
    assert hash(SubGraph.from_dict(g.to_dict())) == hash(g)
    assert g.restrict(["nothing"]) == SubGraph()
    with pytest.raises(AttributeError):
        g.foo = 1


def test_mbv3_min_subnet_regions_by_hand(tiny_mbv3):
    net = tiny_mbv3
    g = subnet_subgraph(net, net.space.min())
    # width 0.35: stem 8 channels (make_divisible(5.6, 8)), stage-0 input 8, expand 3 -> 24 middle channels
    assert g["stem.conv.conv.weight"] == (slice(0, 8), slice(0, 3), slice(0, 3), slice(0, 3))
    assert g.tensor_bytes(8)["stem.conv.conv.weight"] == 216
    assert g["stages.0.blocks.0.conv_pw.weight"] == (slice(0, 24), slice(0, 8), slice(0, 1), slice(0, 1))
    assert g.tensor_bytes(4)["stages.0.blocks.0.conv_pw.weight"] == 96
    # kernel 3 is the centre of the 7x7 weight: taps 2..4
    assert g["stages.0.blocks.0.conv_dw.weight"] == (slice(0, 24), slice(0, 1), slice(2, 5), slice(2, 5))
    assert "stages.0.blocks.2.conv_pw.weight" not in g  # depth 2 skips blocks 2 and 3
    assert not any(k.endswith("num_batches_tracked") for k in g)


def test_mbv3_sizes_match_ws_core_parameter_count(tiny_mbv3):
    net = tiny_mbv3
    costs = CostModel(net)
    for cfg in (net.space.min(), net.space.max()):
        g = subnet_subgraph(net, cfg)
        stats = sum(region_numel(r) for k, r in g.items() if k.endswith(("running_mean", "running_var")))
        assert g.numel() == costs.params(cfg) + stats
        assert g.nbytes(32) == 4 * g.numel()


def test_mbv3_subnets_nest(tiny_mbv3):
    net = tiny_mbv3
    small, large = subnet_subgraph(net, net.space.min()), subnet_subgraph(net, net.space.max())
    assert common_subgraph([small, large]) == small
    assert fetch_bytes(large, small, 8) == large.nbytes(8) - small.nbytes(8)
    assert fetch_bytes(small, large, 8) == 0
    whole = supernet_subgraph(net)
    assert large.issubset(whole)
    expected = sum(v.numel() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert whole.numel() == expected
    whole.check_within(net)


def test_subnet_outside_the_supernet(tiny_mbv3):
    net = tiny_mbv3
    cfg = net.space.max().to_dict()
    cfg["kernel"] = [9] * len(cfg["kernel"])
    with pytest.raises(ValueError, match=r"outside the SuperNet .*'kernel'.*\[3, 5, 7\]"):
        subnet_subgraph(net, cfg)


def test_subgraph_outside_the_supernet(tiny_mbv3):
    with pytest.raises(ValueError, match="not a tensor of the SuperNet"):
        SubGraph({"nope.weight": [[0, 1]]}).check_within(tiny_mbv3)
    with pytest.raises(ValueError, match=r"lies outside the SuperNet tensor of shape \[8, 3, 3, 3\]"):
        SubGraph({"stem.conv.conv.weight": [[0, 9], [0, 3], [0, 3], [0, 3]]}).check_within(tiny_mbv3)

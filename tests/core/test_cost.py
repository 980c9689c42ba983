from __future__ import annotations

import pytest
import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ws_core import Dimension, SearchSpace, SuperNet
from ws_core.cost import CostModel, LatencyTable, count_macs, count_params, profile_latency
from ws_core.elastic import ElasticStage
from ws_core.models.mobilenetv3 import MBConvBlock
from ws_core.supernet import ClassifierHead


class TinyNet(SuperNet):
    """stem 3x3 conv (3->8) | one MBConv block 8->8, expand {1, 2}, kernel 3, elastic depth {0, 1} | linear 8->10."""

    def __init__(self):
        super().__init__()
        self.in_chans = 3
        self.space = SearchSpace(
            [Dimension("resolution", (4,), "net"), Dimension("depth", (0, 1), "stage"),
             Dimension("expand", (1, 2), "block")],
            stage_blocks=(1,),
        )
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False))
        self.stages = nn.Sequential(ElasticStage([MBConvBlock(8, 8, (1, 2), (3,), 1, "relu", use_se=False)]))
        self.head = ClassifierHead(8, 10)
        self.activate(self.space.max())

    def _configure(self, cfg):
        self.stages[0].configure(cfg["depth"][0])
        if cfg["depth"][0]:
            self.stages[0].blocks[0].configure(cfg["expand"][0], 3)


@pytest.mark.parametrize(
    ("depth", "expand", "macs", "params"),
    [
        # stem 8*3*9*16 = 3456 MACs, 216 params; linear 80 MACs, 90 params (4x4 input)
        # expand 2 -> mid 16: pw 16*8*16 + dw 16*9*16 + pwl 8*16*16 = 6400 MACs; 128+144+128 conv + 32+32+16 BN params
        (1, 2, 3456 + 6400 + 80, 216 + 400 + 80 + 90),
        # expand 1 -> mid 8: pw 8*8*16 + dw 8*9*16 + pwl 8*8*16 = 3200 MACs; 64+72+64 conv + 16+16+16 BN params
        (1, 1, 3456 + 3200 + 80, 216 + 200 + 48 + 90),
        # depth 0: the block is skipped
        (0, 1, 3456 + 80, 216 + 90),
    ],
)
def test_macs_and_params_by_hand(depth, expand, macs, params):
    net = TinyNet()
    cfg = {"resolution": 4, "depth": [depth], "expand": [expand]}
    assert count_macs(net, cfg) == macs
    assert count_params(net, cfg) == params
    assert sum(p.numel() for p in net.extract(cfg).parameters()) == params


@pytest.mark.parametrize("name", ["ws_ofa_mbv3_035_32", "ws_ofa_resnet50_025_32", "ws_ofa_mbv3_100"])
def test_macs_match_torch_flop_counter_and_params_match_extract(name):
    torch.manual_seed(0)
    net = timm.create_model(name, num_classes=10).eval()
    costs = CostModel(net)
    g = torch.Generator().manual_seed(2)
    configs = [net.space.min(), net.space.max(), net.space.sample(g)]
    if name == "ws_ofa_mbv3_100":
        configs = [c.replace(resolution=128) for c in configs[:2]]
    for cfg in configs:
        sub = net.extract(cfg).eval()
        r = cfg["resolution"]
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            sub(torch.randn(1, 3, r, r))
        assert costs.macs(cfg) * 2 == counter.get_total_flops()
        assert costs.params(cfg) == sum(p.numel() for p in sub.parameters())
    assert costs.macs(net.space.min()) < costs.macs(net.space.max())


def test_resolution_changes_macs_not_params():
    net = timm.create_model("ws_ofa_mbv3_100", num_classes=10)
    costs = CostModel(net)
    small, large = net.space.max().replace(resolution=128), net.space.max().replace(resolution=224)
    assert costs.params(small) == costs.params(large)
    ratio = costs.macs(large) / costs.macs(small)
    assert 2.5 < ratio < (224 / 128) ** 2 + 0.1  # head at 1x1 does not scale


def test_latency_table_profiles_and_round_trips(tiny_mbv3, tmp_path):
    net = tiny_mbv3
    configs = [net.space.min(), net.space.max()]
    table = profile_latency(net, configs, batch_sizes=(1, 2), warmup=1, repeats=3)
    assert len(table.entries) == 4
    assert table.subnet_ids == [c.id for c in configs]
    assert all(e.median_ms > 0 and e.p90_ms >= e.median_ms for e in table.entries)
    assert table.latency_ms(configs[0].id, 2) == table.entries[1].median_ms
    assert table.latency_ms(configs[1], 1) == table.entries[2].median_ms
    with pytest.raises(KeyError, match="batch size 8"):
        table.latency_ms(configs[0].id, 8)
    path = tmp_path / "latency.json"
    table.save(path)
    assert LatencyTable.load(path) == table
    assert LatencyTable.from_json(table.to_json()) == table
    ex = profile_latency(net, configs[:1], warmup=0, repeats=1, mode="extract")
    assert ex.mode == "extract" and len(ex.entries) == 1


def test_profile_latency_rejects_bad_arguments(tiny_mbv3):
    net = tiny_mbv3
    with pytest.raises(ValueError, match="mode must be 'active' or 'extract', got 'jit'"):
        profile_latency(net, [net.space.min()], mode="jit")
    with pytest.raises(ValueError, match="batch sizes must be >= 1"):
        profile_latency(net, [net.space.min()], batch_sizes=(0,))
    with pytest.raises(ValueError, match="repeats >= 1"):
        profile_latency(net, [net.space.min()], repeats=0)
    with pytest.raises(ValueError, match="'kernel'"):
        profile_latency(net, [dict(net.space.min().to_dict(), kernel=[4] * 20)])


def _fake_timer(durations_ms):
    """A clock for ``profile_latency``: it reads the clock before and after each forward, so every
    forward takes the next of ``durations_ms``."""
    stamps, t = [], 0.0
    for d in durations_ms:
        stamps += [t, t + d / 1e3]
        t += d / 1e3 + 1.0
    return iter(stamps).__next__


def test_profile_latency_keeps_the_minimum_median_over_rounds():
    net = TinyNet()
    cfg = {"resolution": 4, "depth": [1], "expand": [2]}
    # rounds of 3 timed forwards: medians 6 (round 1: 5, 6, 7) and 4 (round 2: 2, 9, 4) -> 4, p90 of round 2: 9
    lines = []
    table = profile_latency(net, [cfg], warmup=0, repeats=3, rounds=2, progress=lines.append,
                            timer=_fake_timer([5, 6, 7, 2, 9, 4]))
    (e,) = table.entries
    assert (e.median_ms, e.p90_ms, e.repeats, e.rounds) == pytest.approx((4.0, 9.0, 3, 2))
    # one line per SubNet and round; this SubNet has 3456 + 6400 + 80 MACs (test_macs_and_params_by_hand)
    assert lines == ["profiling SubNet 1/1 (0.0 MMACs) batch 1, round 1/2",
                     "profiling SubNet 1/1 (0.0 MMACs) batch 1, round 2/2"]
    # rounds sweep the whole table: round 1 times (batch 1, batch 2, ..., batch 4), then round 2 does again
    table = profile_latency(net, [cfg], batch_sizes=(1, 2, 3, 4), warmup=0, repeats=1, rounds=2,
                            progress=lines.append, timer=_fake_timer([1, 2, 3, 4, 0.5, 3, 2, 5]))
    assert [e.median_ms for e in table.entries] == pytest.approx([0.5, 2, 2, 4])
    assert lines[-1] == "profiling SubNet 1/1 (0.0 MMACs) batch 1..4, round 2/2"
    with pytest.raises(ValueError, match="rounds >= 1, got 0, 1, 0"):
        profile_latency(net, [cfg], warmup=0, repeats=1, rounds=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_latency_on_cuda_synchronises(tiny_mbv3):
    net = tiny_mbv3.cuda()
    table = profile_latency(net, [net.space.min()], batch_sizes=(1, 8), warmup=2, repeats=5)
    assert table.device.startswith("cuda") and all(e.median_ms > 0 for e in table.entries)


def test_layer_macs_sum_to_macs_and_follow_execution_order(tiny_mbv3):
    costs = CostModel(tiny_mbv3)
    cfg = tiny_mbv3.space.sample(torch.Generator().manual_seed(8))
    layers = costs.layer_macs(cfg)
    assert sum(layers.values()) == costs.macs(cfg)
    names = list(layers)
    assert names[0] == "stem.conv.conv" and names[-1] == "head.classifier"
    skipped = [f"stages.{s}.blocks.{j}." for s, d in enumerate(cfg["depth"]) for j in range(d, 4)]
    assert not any(n.startswith(p) for n in names for p in skipped)
    assert costs.output_positions((32, 32))["stem.conv.conv"] == 32 * 32

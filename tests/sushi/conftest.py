from __future__ import annotations

import pytest
import timm
import torch

import ws_core  # noqa: F401  (registers the ws_* SuperNets)
from ws_sushi.accel import SubNetLayout
from ws_sushi.hardware import HardwareProfile
from ws_sushi.subgraph import SubGraph


@pytest.fixture
def tiny_mbv3():
    """The fast 32x32 OFA MobileNetV3 SuperNet, seeded."""
    torch.manual_seed(0)
    return timm.create_model("ws_ofa_mbv3_035_32", num_classes=10)


@pytest.fixture
def toy_profile():
    """A device with round numbers: 5 MACs/cycle sustained at 1 MHz, 1000 B/s, 1/2/3 pJ."""
    return HardwareProfile(
        name="toy", clock_hz=1e6, macs_per_cycle=10, mac_utilization=0.5, weight_buffer_bytes=30,
        offchip_bandwidth_bytes_per_s=1000.0, energy_pj_per_mac=1.0, energy_pj_per_onchip_byte=2.0,
        energy_pj_per_offchip_byte=3.0, overlap_fetch=True, weight_bits=8,
    )


def toy_layout(name: str, a_out: int, b_in: int, a_macs: int, b_macs: int) -> SubNetLayout:
    """A hand-built two-layer SubNet: ``a`` (a.weight [a_out, 4], a.bn [a_out]) then ``b`` (b.weight [2, b_in])."""
    g = SubGraph({"a.weight": [[0, a_out], [0, 4]], "a.bn": [[0, a_out]], "b.weight": [[0, 2], [0, b_in]]})
    return SubNetLayout(config=name, subgraph=g, layers=("a", "b"), macs=(a_macs, b_macs), positions=(25, 1),
                        tensor_layer={"a.weight": 0, "a.bn": 0, "b.weight": 1})


@pytest.fixture
def make_layout():
    return toy_layout

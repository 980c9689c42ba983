from __future__ import annotations

import pytest
import timm
import torch

import ws_core  # noqa: F401  (registers the ws_* SuperNets)


@pytest.fixture
def tiny_mbv3():
    """The fast 32x32 OFA MobileNetV3 SuperNet, seeded."""
    torch.manual_seed(0)
    return timm.create_model("ws_ofa_mbv3_035_32", num_classes=10)


@pytest.fixture
def images():
    """A list of 4 batches of 8 random 32x32 images with labels (a stand-in for a loader)."""
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 3, 32, 32, generator=g) * 1.5 + 0.3, torch.randint(0, 10, (8,), generator=g))
            for _ in range(4)]

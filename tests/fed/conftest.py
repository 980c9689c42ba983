from __future__ import annotations

import pytest

from ws_fed.task import build_supernet, load_digits


@pytest.fixture
def net():
    """The tiny OFA MobileNetV3 SuperNet for 1×8×8 digits, seeded."""
    return build_supernet("ws_ofa_mbv3_035_32", image_size=8, seed=0)


@pytest.fixture(scope="session")
def digits():
    return load_digits(image_size=8, seed=0)

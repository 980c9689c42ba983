"""Fixtures shared by every package's tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_caches(tmp_path_factory):
    """Caches the packages keep across runs (ws-serve's exported ONNX SubNets) go to a temporary folder,
    so the tests leave nothing behind in the user's cache; server subprocesses inherit the variable."""
    mp = pytest.MonkeyPatch()
    mp.setenv("WS_SERVE_CACHE_DIR", str(tmp_path_factory.mktemp("ws-serve-cache")))
    yield
    mp.undo()

"""The SuperFedNAS-vs-FedAvg benchmark keeps a trained SuperNet and reuses it only for equal settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from ws_core.checkpoint import CheckpointError

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fed_superfednas_vs_fedavg.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("fed_superfednas_vs_fedavg", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_saved_supernet_is_reused_with_its_cost_and_refused_for_other_settings(bench, tmp_path):
    path = str(tmp_path / "sfn.safetensors")
    small = ["--clients", "4", "--rounds", "1", "--batch-size", "64"]
    args = bench.parse_args([*small, "--save-supernet", path])
    trained, cost, seconds = bench.superfednas(bench.run_config(args), args)
    assert cost["client_macs"] > 0 and seconds > 0

    # the search criterion is not a training setting: a run searching by loss may reuse the SuperNet
    args = bench.parse_args([*small, "--search-criterion", "loss", "--load-supernet", path])
    loaded, loaded_cost, loaded_seconds = bench.superfednas(bench.run_config(args), args)
    assert loaded_cost == cost and loaded_seconds == seconds
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=key)

    args = bench.parse_args([*small[:2], "--rounds", "2", "--batch-size", "64", "--load-supernet", path])
    with pytest.raises(CheckpointError, match="trained with other settings"):
        bench.superfednas(bench.run_config(args), args)

"""Payload checks (the gate before aggregation) and the run config."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from ws_fed.config import FedConfig
from ws_fed.payload import InvalidSubNetArrays, check_subnet_arrays, payload_nbytes, slice_arrays

PYPROJECT = Path(__file__).resolve().parents[2] / "packages" / "ws-fed" / "pyproject.toml"


def test_slice_arrays_copies_regions_and_keeps_scalars():
    full = {"w": np.arange(12.0).reshape(3, 4), "n": np.array(7)}
    part = slice_arrays(full, {"w": (slice(0, 2), slice(1, 3)), "n": ()})
    np.testing.assert_array_equal(part["w"], [[1.0, 2.0], [5.0, 6.0]])
    assert part["n"].shape == () and int(part["n"]) == 7
    part["w"][0, 0] = -1
    assert full["w"][0, 1] == 1.0  # a copy, not a view
    assert payload_nbytes(part) == 4 * 8 + 8


@pytest.mark.parametrize("arrays, match", [
    ({"a": np.zeros(2)}, r"wrong keys: 1 missing key\(s\) \['b'\]"),
    ({"a": np.zeros(2), "b": np.zeros(3), "c": np.zeros(1)}, r"1 unexpected key\(s\) \['c'\]"),
    ({"a": np.zeros(3), "b": np.zeros(3)}, r"'a': expected shape \(2,\), got \(3,\)"),
    ({"a": np.array([0.0, np.nan]), "b": np.zeros(3)}, r"'a': 1 non-finite value\(s\)"),
    ({"a": np.array([np.inf, -np.inf]), "b": np.zeros(3)}, r"'a': 2 non-finite value\(s\)"),
    ({"a": np.array(["x", "y"]), "b": np.zeros(3)}, "real numeric dtype"),
    ({"a": [0.0, 0.0], "b": np.zeros(3)}, "expected a NumPy array, got list"),
])
def test_check_subnet_arrays_rejects(arrays, match):
    with pytest.raises(InvalidSubNetArrays, match=match):
        check_subnet_arrays(arrays, {"a": (2,), "b": (3,)})


def test_check_subnet_arrays_accepts_ints_and_scalars():
    check_subnet_arrays({"a": np.zeros(2, np.float16), "n": np.array(3)}, {"a": (2,), "n": ()})


def test_run_config_round_trip_and_kebab_keys():
    cfg = FedConfig.from_run_config({"num-server-rounds": 7, "lr": 1, "beta-final": 0, "target-macs": "1e6, 2.5e6"})
    assert cfg.num_server_rounds == 7 and cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.beta_final == 0.0
    assert cfg.target_mac_budgets() == [1e6, 2.5e6]
    assert FedConfig.from_run_config(cfg.to_run_config()) == cfg
    assert cfg.beta_final_for(8) == 0.0 and FedConfig().beta_final_for(8) == 0.125
    assert FedConfig(num_server_rounds=1500).beta_decay_rounds() == 1200


@pytest.mark.parametrize("run_config, match", [
    ({"num-rounds": 3}, r"unknown run config key\(s\) \['num-rounds'\]"),
    ({"num-server-rounds": 0}, "'num-server-rounds' must be an int >= 1, got 0"),
    ({"num-server-rounds": 2.5}, "'num-server-rounds' must be an int >= 1, got 2.5"),
    ({"fraction-train": 1.5}, r"'fraction-train' must be in \(0, 1\], got 1.5"),
    ({"partitioner": "shards"}, "'partitioner' must be 'iid' or 'dirichlet', got 'shards'"),
    ({"dirichlet-alpha": -1}, "'dirichlet-alpha' must be a number > 0"),
    ({"beta-final": "auto"}, "'beta-final' must be 'uniform'"),
    ({"momentum": 1.0}, r"'momentum' must be in \[0, 1\)"),
    ({"local-epochs": 0}, "'local-epochs' must be > 0 unless local-steps > 0"),
    ({"target-macs": "1e6, fast"}, "'target-macs' must be comma-separated numbers"),
    ({"target-macs": "-5"}, "'target-macs' must hold positive finite numbers"),
    ({"weight-by-examples": "yes"}, "'weight-by-examples' must be true or false"),
    ({"lr-schedule": "step"}, "'lr-schedule' must be 'constant', 'cosine' or 'linear', got 'step'"),
    ({"lr": 0.1, "lr-final": 0.2}, r"'lr-final' must be a number in \[0, lr=0.1\], got 0.2"),
    ({"search-share-candidates": 1}, "'search-share-candidates' must be true or false, got 1"),
    ({"search-criterion": "f1"}, "'search-criterion' must be 'accuracy' or 'loss' or 'accuracy_then_loss', got 'f1'"),
])
def test_run_config_rejects_bad_values(run_config, match):
    with pytest.raises(ValueError, match=match):
        FedConfig.from_run_config(run_config)


def test_flower_app_config_matches_fedconfig():
    """Every ``[tool.flwr.app.config]`` key is a FedConfig field, with the same defaults."""
    app = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "ws_fed.server_app:app", "clientapp": "ws_fed.client_app:app"}
    from_toml = FedConfig.from_run_config(app["config"])
    assert from_toml == FedConfig()
    assert set(app["config"]) == set(FedConfig().to_run_config())

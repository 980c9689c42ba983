"""The Flower App definition, the command line and the public surface."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

import ws_fed
from ws_fed.cli import main

APP_DIR = Path(__file__).resolve().parents[2] / "packages" / "ws-fed"


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pathspec")
def test_flower_app_validates_and_builds_a_fab():
    """``flwr run`` validates pyproject.toml and packs the app the same way."""
    from flwr.cli.build import build_fab_from_disk
    from flwr.cli.config_utils import load_and_validate
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    from ws_fed.client_app import app as client_app
    from ws_fed.server_app import app as server_app

    config, warnings = load_and_validate(APP_DIR / "pyproject.toml")
    assert warnings == []
    assert config["tool"]["flwr"]["app"]["publisher"] == "weightshare"
    names = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(APP_DIR))).namelist()
    assert "src/ws_fed/client_app.py" in names and "src/ws_fed/server_app.py" in names
    assert isinstance(client_app, ClientApp) and isinstance(server_app, ServerApp)


def test_partition_command(capsys):
    assert main(["partition", "--num-partitions", "4", "--alpha", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "Dirichlet alpha=0.1" in out and len([ln for ln in out.splitlines() if ln.strip()[:1].isdigit()]) == 4


def test_specialise_command(tmp_path, net, capsys):
    from ws_core.checkpoint import save_checkpoint

    ckpt = tmp_path / "supernet.safetensors"
    save_checkpoint(net, ckpt, extra={"model": "ws_ofa_mbv3_035_32", "image_size": 8})
    out_json = tmp_path / "targets.json"
    assert main(["specialise", str(ckpt), "--macs", "2e6", "--population", "2", "--generations", "0",
                 "--bn-batches", "1", "--json", str(out_json)]) == 0
    assert "| macs<=2M |" in capsys.readouterr().out
    found = json.loads(out_json.read_text())[0]
    assert found["macs"] <= 2e6 and found["fitness"] == found["val_accuracy"]
    assert main(["specialise", str(ckpt), "--macs", "2e6", "--population", "2", "--generations", "0",
                 "--bn-batches", "1", "--criterion", "loss", "--json", str(out_json)]) == 0
    found = json.loads(out_json.read_text())[0]
    assert found["fitness"] == -found["val_loss"] and 0 <= found["val_accuracy"] <= 1
    with pytest.raises(SystemExit):
        main(["specialise", str(ckpt), "--macs", "2e6", "--criterion", "f1"])
    assert main(["specialise", str(ckpt)]) == 2


def test_public_api():
    assert sorted(ws_fed.__all__) == sorted([
        "BaselineCost", "DeploymentTarget", "FedAvgSubNet", "FedConfig", "FederatedRun", "InProcessGrid",
        "InvalidSubNetArrays", "RoundCost", "Specialisation", "StaticSubNet", "SubNetAccuracy", "SubNetUpdate",
        "SuperFedNAS", "TrackingSandwich", "aggregate_overlapping", "baseline_cost", "dirichlet_partition",
        "format_table", "iid_partition", "maxnet_beta", "maxnet_weights", "partition_dataset", "run_federated",
        "specialise", "tracking_sandwich",
    ])
    for name in ws_fed.__all__:
        assert hasattr(ws_fed, name)


@pytest.mark.parametrize("module", ["accounting", "aggregation", "config", "federated", "inprocess", "partition",
                                    "payload", "sandwich", "specialise", "strategy", "task", "client_app",
                                    "server_app", "cli"])
def test_every_module_declares_all(module):
    import importlib

    mod = importlib.import_module(f"ws_fed.{module}")
    assert mod.__doc__ and mod.__all__
    for name in mod.__all__:
        assert hasattr(mod, name), f"ws_fed.{module}.{name}"


def test_specialise_command_uses_the_checkpoints_seed(tmp_path, net, monkeypatch):
    """The seed fixes the validation/test split: by default the run's own, so no training data leaks in."""
    import ws_fed.cli as cli
    from ws_core.checkpoint import save_checkpoint

    ckpt = tmp_path / "supernet.safetensors"
    save_checkpoint(net, ckpt, extra={"model": "ws_ofa_mbv3_035_32", "image_size": 8, "seed": 3})
    seen = []
    monkeypatch.setattr(cli, "specialise_targets", lambda net, cfg, targets: seen.append(cfg.seed) or [])
    assert main(["specialise", str(ckpt), "--macs", "2e6"]) == 0
    assert main(["specialise", str(ckpt), "--macs", "2e6", "--seed", "5"]) == 0
    assert seen == [3, 5]


def test_independent_searches_reach_the_search(tmp_path, net, digits, monkeypatch):
    """``--independent-searches`` → ``search-share-candidates = false`` → ``specialise(share_candidates=False)``."""
    import ws_fed.cli as cli
    import ws_fed.federated as federated
    from ws_core.checkpoint import save_checkpoint
    from ws_fed import FedConfig

    ckpt = tmp_path / "supernet.safetensors"
    save_checkpoint(net, ckpt, extra={"model": "ws_ofa_mbv3_035_32", "image_size": 8, "seed": 0})
    seen = []
    monkeypatch.setattr(cli, "specialise_targets",
                        lambda net, cfg, targets: seen.append(cfg.search_share_candidates) or [])
    assert main(["specialise", str(ckpt), "--macs", "2e6"]) == 0
    assert main(["specialise", str(ckpt), "--macs", "2e6", "--independent-searches"]) == 0
    assert seen == [True, False]
    passed = []
    monkeypatch.setattr(federated, "specialise", lambda *a, **kw: passed.append(kw["share_candidates"]) or [])
    for share in (True, False):
        federated.specialise_targets(net, FedConfig(search_share_candidates=share), [], data=digits)
    assert passed == [True, False]

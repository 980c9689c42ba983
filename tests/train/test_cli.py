"""The ws-train CLI (LightningCLI): shorthands, a tiny in-process fit, a YAML config, --help."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ws_core.checkpoint import load_checkpoint
from ws_train import DelayedEpsilonShrinking, ProgressiveShrinking, SandwichRule, SubNetValidation
from ws_train.cli import SuperNetCLI, normalize_args
from ws_train.module import build_supernet

TINY = ["--data.image_size", "8", "--data.batch_size", "8", "--data.train_size", "32",
        "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0",
        "--trainer.accelerator", "cpu", "--validation.bn_batches", "1"]


def test_normalize_args_expands_shorthands_only():
    assert normalize_args(["fit", "--model", "ws_ofa_mbv3_035_32", "--data", "digits", "--shrinking=sandwich"]) == [
        "fit", "--model.supernet=ws_ofa_mbv3_035_32", "--data=ws_train.DigitsDataModule",
        "--shrinking=ws_train.SandwichRule",
    ]
    assert normalize_args(["fit", "--model", "model.yaml", "--data", "my.DataModule", "--shrinking", "PS"]) == [
        "fit", "--model=model.yaml", "--data=my.DataModule", "--shrinking=ws_train.ProgressiveShrinking",
    ]
    assert normalize_args(["fit", "--shrinking", "none", "--model.lr", "0.1"]) == [
        "fit", "--shrinking=null", "--model.lr", "0.1"]


def test_fit_with_shorthands_trains_validates_and_exports(tmp_path):
    cli = SuperNetCLI(args=["fit", "--model", "ws_ofa_mbv3_035_32", "--data", "digits", "--shrinking", "sandwich",
                            "--shrinking.num_random", "1", "--trainer.limit_train_batches", "2",
                            "--trainer.default_root_dir", str(tmp_path), *TINY])
    callbacks = cli.trainer.callbacks
    assert sum(isinstance(c, SandwichRule) for c in callbacks) == 1
    assert sum(isinstance(c, SubNetValidation) for c in callbacks) == 1
    assert cli.trainer.global_step == 2 and cli.model.num_classes == 10  # linked from the data module
    run = Path(cli.trainer.log_dir)
    assert (run / "config.yaml").is_file()
    with open(run / "metrics.csv") as f:
        assert any(r.get("val/acc/mean") for r in csv.DictReader(f))
    fresh = build_supernet("ws_ofa_mbv3_035_32", num_classes=10)  # the exported SuperNet loads into a fresh one
    load_checkpoint(fresh, run / "supernet.safetensors")
    trained = cli.model.supernet.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in fresh.state_dict().items())


def test_fit_from_yaml_config_with_default_policy(tmp_path):
    config = {
        "model": {"supernet": "ws_ofa_mbv3_035_32", "lr": 0.05},
        "data": {"class_path": "ws_train.DigitsDataModule", "init_args": {"image_size": 8, "train_size": 32}},
        "trainer": {"max_steps": 3, "default_root_dir": str(tmp_path), "logger": False,
                    "enable_checkpointing": False},
        "shrinking": {"init_args": {"warmup_fraction": 0.5, "ramp_fraction": 0.2}},
        "supernet_out": str(tmp_path / "out" / "net.safetensors"),
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = SuperNetCLI(args=["fit", "--config", str(path), *TINY])
    (policy,) = [c for c in cli.trainer.callbacks if isinstance(c, DelayedEpsilonShrinking)]
    assert policy.warmup_fraction == 0.5 and policy.ramp_fraction == 0.2
    assert cli.trainer.global_step == 3 and policy.schedule.switch_step == 2  # round(0.5 × 3)
    assert (tmp_path / "out" / "net.safetensors").is_file()


def test_print_config_and_policy_choice_without_training(capsys):
    with pytest.raises(SystemExit) as exit_:
        SuperNetCLI(args=["fit", "--model", "ws_ofa_mbv3_035_32", "--shrinking", "ofa", "--print_config"])
    assert exit_.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["shrinking"]["class_path"].endswith(ProgressiveShrinking.__name__)
    assert printed["data"]["class_path"] == "ws_train.DigitsDataModule"  # the default data set
    assert printed["model"]["supernet"] == "ws_ofa_mbv3_035_32"


def test_bad_policy_argument_fails_before_training_with_allowed_and_got():
    with pytest.raises(ValueError, match=r"warmup_fraction must be in \[0, 1\), got 1.5"):
        SuperNetCLI(args=["fit", "--shrinking", "des", "--shrinking.warmup_fraction", "1.5",
                          "--trainer.max_steps", "1"])


@pytest.mark.slow  # a fresh interpreter importing torch, Lightning and timm: ~5–15 s on 2 cores
def test_console_script_help():
    script = Path(sys.executable).with_name("ws-train")
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable} (pip install -e packages/ws-train)")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "Delayed ε-Shrinking" in out.stdout and "{fit,validate,test,predict}" in out.stdout

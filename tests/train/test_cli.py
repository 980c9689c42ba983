"""The ws-train CLI (LightningCLI): shorthands, a tiny in-process fit, a YAML config, --help, predict."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml

from ws_core.checkpoint import load_checkpoint
from ws_train import DelayedEpsilonShrinking, ProgressiveShrinking, SandwichRule, SubNetValidation
from ws_train.cli import SuperNetCLI, main, normalize_args
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
    assert normalize_args(["--model", "ws_train.SuperNetModule", "--model={lr: 0.1}"]) == [
        "--model=ws_train.SuperNetModule", "--model={lr: 0.1}"]  # a class path and inline YAML: configs


def test_bare_model_name_must_be_registered_unless_it_is_a_file(tmp_path, monkeypatch):
    registered = ", ".join(timm.list_models("ws_*"))
    with pytest.raises(ValueError, match=rf"unknown model 'ws_ofa_mbv3_999' \(registered: {registered}\)"):
        normalize_args(["fit", "--model=ws_ofa_mbv3_999"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodel").write_text("lr: 0.1\n")
    assert normalize_args(["fit", "--model", "mymodel"]) == ["fit", "--model=mymodel"]


def test_unknown_model_is_a_parser_error_naming_the_registered_ones(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--model", "ws_ofa_mbv3_999", "--trainer.max_steps", "1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"unknown model 'ws_ofa_mbv3_999' (registered: {', '.join(timm.list_models('ws_*'))})" in err
    assert "Unable to load config" not in err


def test_fit_help_shows_the_model_name_shorthand(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ws-train [options] fit")
    assert "--model CONFIG" not in out  # jsonargparse's generic "Path to a configuration file"
    help_ = re.search(r"\n\s+--model NAME\|CONFIG\s+(.*?)\n\s+--model\.", out, re.DOTALL)
    text = " ".join(help_.group(1).split())  # the help text wraps at the terminal width
    assert text.startswith("a registered SuperNet, short for --model.supernet NAME")
    assert all(name in text for name in timm.list_models("ws_*")) and "YAML/JSON config" in text




def test_predict_gives_the_active_subnets_logits_on_the_held_out_split(kit):
    module, data = kit.module(), kit.data(eval_batch_size=16)
    net = module.supernet
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a fresh SuperNet's logits are ~1e-10 (zero-initialised last BN): random weights
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    cfg = net.space.min()
    net.activate(cfg)
    predictions = kit.trainer(limit_predict_batches=2).predict(module, data)
    assert [p.shape for p in predictions] == [(16, 10), (16, 10)]
    batches = iter(data.predict_dataloader())  # digits have no test split: the validation images, in order
    (x, _), (x2, _) = next(batches), next(batches)
    assert torch.equal(x, data.val_set.tensors[0][:16]) and torch.equal(x2, data.val_set.tensors[0][16:32])
    assert net.active == cfg
    net.eval()  # predict ran in eval mode (BN running statistics, no dropout)
    with torch.no_grad():
        torch.testing.assert_close(predictions[0], net(x))
        torch.testing.assert_close(predictions[1], net(x2))
        net.activate(net.space.max())
        assert not torch.allclose(predictions[0], net(x), rtol=0.1)  # the min SubNet's, not the max net's


def test_predict_subcommand_returns_exit_status_zero(tmp_path):
    assert main(["predict", "--model", "ws_ofa_mbv3_035_32", "--data.image_size", "8", "--data.eval_batch_size",
                 "8", "--trainer.limit_predict_batches", "2", "--trainer.accelerator", "cpu",
                 "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)]) == 0


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

from __future__ import annotations

import json
import re

import pytest
import yaml

from ws_nas import Genotype
from ws_nas.cli import main

COMMON = ["--data.batch_size", "16", "--data.train_limit", "64", "--trainer.max_epochs", "1",
          "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.logger", "false",
          "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
          "--trainer.enable_model_summary", "false", "--model.C", "4", "--model.layers", "3"]


def test_search_then_train(tmp_path, capsys):
    genotype_path = tmp_path / "genotype.json"
    assert main(["search", *COMMON, "--trainer.default_root_dir", str(tmp_path), "--model.steps", "2",
                 "--model.multiplier", "2", "--model.bits", "[2, 4]", "--nas.warmup_epochs", "0",
                 "--nas.complexity_weight", "0.001", "--nas.genotype_path", str(genotype_path)]) == 0
    genotype = Genotype.load(genotype_path)
    assert genotype.precision is not None and len(genotype.precision) == 3
    out = capsys.readouterr().out
    assert Genotype.from_json(out[out.rindex('{\n "format"'):]) == genotype      # also printed

    report_path, weights_path = tmp_path / "report.json", tmp_path / "net.safetensors"
    assert main(["train", *COMMON, "--trainer.default_root_dir", str(tmp_path), "--model.genotype",
                 str(genotype_path), "--report_path", str(report_path), "--weights_path", str(weights_path)]) == 0
    report = json.loads(report_path.read_text())
    assert 0.0 <= report["test_acc"] <= 1.0
    assert report["precision"] == "genotype"
    assert 0 < report["cell_bitops"] < report["bitops"]
    assert 2 <= report["mean_weight_bits"] <= 4 and report["model_size_bits"] > 0
    assert weights_path.is_file()


def _exit_code(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_front_lists_the_subcommands_and_rejects_unknown_ones(capsys):
    code, out, _ = _exit_code(["--help"], capsys)
    assert code == 0 and out.startswith("usage: ws-nas [-h] {search,train}")
    assert "search" in out and "train" in out and "∇QDARTS" in out
    code, _, err = _exit_code([], capsys)
    assert code == 2 and "required: {search,train}" in err
    code, _, err = _exit_code(["evolve"], capsys)
    assert code == 2 and "invalid choice: 'evolve'" in err and "search" in err and "train" in err


@pytest.mark.parametrize(("command", "option"), [("search", "--nas.complexity_weight"), ("train", "--report_path")])
def test_subcommand_help_is_its_lightning_cli(command, option, capsys):
    code, out, _ = _exit_code([command, "--help"], capsys)
    assert code == 0 and out.startswith(f"usage: ws-nas {command}") and option in out
    help_ = re.search(r"\n\s+--model CONFIG\s+(.*?)\n\s+--model\.", out, re.DOTALL)  # not the usage line
    text = " ".join(help_.group(1).split())  # the help text wraps at the terminal width
    assert text == "a YAML/JSON config of the --model.* arguments below (ws-nas has no named models)"


def test_subcommand_gets_its_arguments_in_order(capsys):
    code, out, _ = _exit_code(["search", "--model.C", "4", "--model.C", "6", "--data.image_size=8", "--print_config"],
                              capsys)
    config = yaml.safe_load(out)
    assert code == 0 and config["model"]["C"] == 6 and config["data"]["image_size"] == 8
    assert config["data"]["held_out_fraction"] == 0.5  # the search's default

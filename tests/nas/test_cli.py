from __future__ import annotations

import json

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


def test_usage_and_unknown_command(capsys):
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "ws-nas {search,train}" in capsys.readouterr().out
    assert main(["evolve"]) == 2
    assert "unknown command 'evolve'" in capsys.readouterr().err

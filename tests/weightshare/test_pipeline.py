from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import pytest

from weightshare import PipelineConfig, SubNetResult, choose_load, select_served
from weightshare.cli import main
from ws_serve import Profile


# Configuration ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "resnet18"}, r"model must be one of \[.*'ws_ofa_mbv3_035_32'.*\], got 'resnet18'"),
        ({"dataset": "imagenet"}, r"dataset must be one of \['digits', 'cifar10'\], got 'imagenet'"),
        ({"epochs": 0}, r"epochs must be an int >= 1, got 0"),
        ({"served_subnets": 2.5}, r"served_subnets must be an int >= 1, got 2.5"),
        ({"train_size": 10}, r"train_size must be None or an int >= batch_size \(64\), got 10"),
        ({"load": -1.0}, r"load must be a finite number > 0, got -1.0"),
        ({"trace_seconds": math.inf}, r"trace_seconds must be a finite number > 0, got inf"),
        ({"cv2": -2.0}, r"cv2 must be a finite number >= 0, got -2.0"),
        ({"slo_ms": 0.0}, r"slo_ms must be None .* or a finite number > 0, got 0.0"),
        ({"baseline": "largest"}, r"baseline must be one of \['max', 'median', 'min'\] or a 12-hex-digit SubNet id, "
                                  r"got 'largest'"),
        ({"run_name": "../elsewhere"}, r"run_name may contain .*, got '../elsewhere'"),
    ],
)
def test_bad_settings_fail_up_front_with_allowed_and_given(change, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig(**change).validate()


def test_defaults_are_valid():
    cfg = PipelineConfig().validate()
    assert cfg.dataset == "digits" and cfg.model == "ws_ofa_mbv3_035_32" and cfg.slo_ms is None


# Pure steps -----------------------------------------------------------------------------------------------
def _result(macs: int, acc: float, pareto: bool = True) -> SubNetResult:
    return SubNetResult(SimpleNamespace(id=f"s{macs}"), acc, macs, 0, pareto=pareto)


def test_served_set_spreads_over_the_pareto_front_and_keeps_both_ends():
    results = [_result(m, m / 100) for m in (10, 20, 30, 40, 50, 60, 70)] + [_result(35, 0.1, pareto=False)]
    chosen = select_served(results, 3)
    # indices round(k * 6 / 2) = 0, 3, 6 of the front sorted by MACs
    assert [r.macs for r in chosen] == [10, 40, 70]
    assert [r.macs for r in results if r.served] == [10, 40, 70]
    assert [r.macs for r in select_served(results, 20)] == [10, 20, 30, 40, 50, 60, 70]
    with pytest.raises(ValueError, match="no SubNet is on the Pareto front"):
        select_served([_result(5, 0.5, pareto=False)], 2)


def test_load_and_slo_follow_the_measured_profile():
    profile = Profile(("a", "b", "c"), (0.5, 0.7, 0.9),
                      ((2.0, 3.0, 4.0, 5.0), (4.0, 6.0, 8.0, 10.0), (10.0, 12.0, 30.0, 40.0)))
    # baseline max = "c": SLO 4 × 10 = 40 ms; batches within 20 ms: 1, 2 -> peak max(1000/10, 2000/12) = 166.7 q/s
    index, slo, rate = choose_load(profile, "max", load=0.6)
    assert index == 2 and slo == 40.0 and rate == pytest.approx(0.6 * 2000 / 12)
    # a given SLO: batches within 50 ms are all four -> 4000/40 = 100 < 2000/12
    assert choose_load(profile, "c", load=1.0, slo_ms=100.0) == (2, 100.0, pytest.approx(2000 / 12))
    # median of three is "b": SLO 16 ms, batches within 8 ms are 1..3 -> max(250, 333.3, 375) q/s
    assert choose_load(profile, "median", load=1.0) == (1, 16.0, pytest.approx(3000 / 8))
    assert choose_load(profile, "min", load=1.0)[0] == 0
    # 5 ms per request outside the forward: SLO 4 × (10 + 5) = 60; batches with L + 5 <= 30 are 1, 2;
    # throughput b / (L(b) + 5 b): 1000/15 = 66.7 and 2000/22 = 90.9 q/s
    assert choose_load(profile, "max", load=0.5, overhead_ms=5.0) == (2, 60.0, pytest.approx(0.5 * 2000 / 22))
    # a throughput measured end to end replaces the estimate
    assert choose_load(profile, "max", load=0.5, overhead_ms=5.0, capacity_qps=30.0) == (2, 60.0, 15.0)
    with pytest.raises(ValueError, match="capacity_qps must be > 0, got 0"):
        choose_load(profile, capacity_qps=0)
    with pytest.raises(ValueError, match="overhead_ms must be >= 0, got -1"):
        choose_load(profile, overhead_ms=-1)
    with pytest.raises(KeyError, match="no SubNet 'zzz'"):
        choose_load(profile, "zzz")


# The command --------------------------------------------------------------------------------------------------
def test_ws_command_rejects_unknown_commands_and_bad_options(capsys):
    assert main(["deploy"]) == 2
    assert "unknown command 'deploy'; allowed: ['demo', 'core', 'train'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["demo", "--epochs", "0"])
    assert e.value.code == 2 and "epochs must be an int >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["demo", "--dataset", "mnist"])
    assert e.value.code == 2 and "invalid choice: 'mnist'" in capsys.readouterr().err


def test_ws_forwards_to_the_package_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "simulate" in out and "replay" in out


def test_cifar10_without_files_says_where_it_looked(tmp_path):
    from weightshare import make_datamodule

    cfg = PipelineConfig(dataset="cifar10", data_root=str(tmp_path / "none")).validate()
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 is not under .*none/cifar-10-batches-py.*--download"):
        make_datamodule(cfg, 32)


# The whole pipeline at a reduced size ------------------------------------------------------------------------
def test_pipeline_trains_searches_serves_and_reports(tmp_path, capsys):
    code = main(["demo", "--epochs", "2", "--batch-size", "32", "--train-size", "320", "--candidates", "3",
                 "--bn-batches", "2",
                 "--served-subnets", "3", "--max-batch", "4", "--trace-seconds", "3", "--cv2", "4",
                 "--out", str(tmp_path), "--name", "run", "--no-progress-bar"])
    assert code == 0
    run = tmp_path / "run"
    out = capsys.readouterr().out
    assert f"report: {run / 'report.md'}" in out
    for name in ("report.md", "accuracy_vs_macs.png", "serving_timeline.png", "results.json", "config.json",
                 "trace.csv", "supernet.safetensors", "supernet.safetensors.served.json",
                 "supernet.safetensors.subnetnorm.safetensors", "server-slackfit.log", "server-fixed.log",
                 "server-calibration.log"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    for png in ("accuracy_vs_macs.png", "serving_timeline.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    results = json.loads((run / "results.json").read_text())
    subnets = {s["label"] if s["label"] in ("min", "max") else s["id"]: s for s in results["subnets"]}
    assert len(results["subnets"]) == 5 and {"min", "max"} <= set(subnets)
    # 3 candidates: a third drawn at random, the rest mutations of the Pareto front found so far
    assert [s["label"] for s in results["subnets"]] == ["min", "max", "random", "mutation", "mutation"]
    assert subnets["max"]["accuracy"] > 0.2          # 10 classes: chance is 0.1
    assert all(0 <= s["accuracy"] <= 1 for s in results["subnets"])
    assert subnets["min"]["macs"] < subnets["max"]["macs"]
    served = [s for s in results["subnets"] if s["served"]]
    assert 1 <= len(served) <= 3 and all(s["pareto"] for s in served)
    assert results["slo_ms"] > 0 and results["overhead_ms"] >= 0 and results["capacity_qps"] > 0
    assert results["rate_qps"] == pytest.approx(0.7 * results["capacity_qps"])

    policies = {r["policy"].partition(":")[0]: r for r in results["serving"]}
    assert set(policies) == {"slackfit", "fixed"}
    for r in policies.values():
        assert r["sent"] == results["trace"]["queries"] > 0
        assert sum(r["statuses"].values()) == r["sent"]            # one outcome per query
        assert 0.0 <= r["slo_attainment"] <= 1.0
        assert all(a is None or 0 <= a <= 1 for a in r["timeline"]["slo_attainment"])
        if r["met_slo"]:
            assert min(s["accuracy"] for s in served) - 1e-9 <= r["mean_accuracy"] <= max(
                s["accuracy"] for s in served) + 1e-9
    best = max(s["accuracy"] for s in served)
    assert all(next(s for s in served if s["id"] == sid)["accuracy"] == best for sid in policies["fixed"]["subnets"])

    report = (run / "report.md").read_text()
    assert "![accuracy vs MACs](accuracy_vs_macs.png)" in report
    assert "![serving timeline](serving_timeline.png)" in report
    assert re.search(r"SlackFit \| [01]\.\d{3} \|", report)
    assert f"{100 * subnets['max']['accuracy']:.2f}" in report

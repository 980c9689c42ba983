from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import pytest

from weightshare import PipelineConfig, SubNetResult
from weightshare.cli import main
from weightshare.pipeline import make_datamodule, select_served
from weightshare.report import predictor_dict, summary
from ws_serve import Profile
from ws_serve.calibration import served_rate_ratio


# Configuration ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "resnet18"}, r"model must be one of \[.*'ws_ofa_mbv3_035_28'.*\], got 'resnet18'"),
        ({"dataset": "imagenet"}, r"dataset must be one of \['fashion_mnist', 'digits', 'cifar10'\], got 'imagenet'"),
        ({"backend": "tensorrt"}, r"backend must be one of \['auto', 'onnxruntime', 'eager', 'compile'\], "
                                  r"got 'tensorrt'"),
        ({"repeats": 0}, r"repeats must be an int >= 1, got 0"),
        ({"warmup_fraction": 0.95}, r"warmup_fraction must be in \[0, 0.9\) \(the ε ramp takes 0.1 of the steps "
                                    r"after it\), got 0.95"),
        ({"epochs": 0}, r"epochs must be an int >= 1, got 0"),
        ({"served_subnets": 2.5}, r"served_subnets must be an int >= 1, got 2.5"),
        ({"predictor_candidates": -1}, r"predictor_candidates must be an int >= 0, got -1"),
        ({"train_size": 10}, r"train_size must be None or an int >= batch_size \(128\), got 10"),
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
    assert cfg.dataset == "fashion_mnist" and cfg.model == "ws_ofa_mbv3_035_28" and cfg.slo_ms is None
    assert cfg.predictor_candidates == 4


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


def _served(macs, acc, latency):
    return SimpleNamespace(id=f"s{macs}", macs=macs, accuracy=acc, served=True, pareto=True, label="")


def test_summary_reports_the_acceptance_quantities():
    # 4 evaluated SubNets, ordered but for one pair; 3 served; profile sorted by accuracy as ws-serve keeps it
    subnets = [SimpleNamespace(id="a", macs=1, accuracy=0.80, served=True, pareto=True, label="min"),
               SimpleNamespace(id="b", macs=2, accuracy=0.85, served=True, pareto=True, label="random"),
               SimpleNamespace(id="c", macs=3, accuracy=0.84, served=False, pareto=False, label="random"),
               SimpleNamespace(id="d", macs=4, accuracy=0.90, served=True, pareto=True, label="max")]
    profile = Profile(("a", "b", "d"), (0.80, 0.85, 0.90), ((1.0, 2.0), (2.0, 3.0), (4.0, 3.5)))
    run = lambda policy, label, attain, acc: SimpleNamespace(  # noqa: E731
        policy=policy, label=label, slo_attainment=attain, mean_accuracy=acc)
    result = SimpleNamespace(
        subnets=subnets, served=[s for s in subnets if s.served], profile=profile, query_cost_ms=0.5,
        serving=[run("slackfit", "SlackFit", 0.95, 0.87), run("fixed:d", "fixed d (most accurate)", 0.70, 0.90),
                 run("fixed:a", "fixed a (least accurate)", 1.0, 0.80)])
    out = summary(result)
    assert out["max_minus_min_accuracy"] == pytest.approx(0.10)
    # ranks of MACs 1..4 vs accuracy ranks 1, 3, 2, 4: rho = 1 - 6 * (0 + 1 + 1 + 0) / (4 * 15) = 0.8
    assert out["spearman_macs_accuracy"] == pytest.approx(0.8)
    assert out["pareto_subnets"] == 3 and out["served_subnets"] == 3 and out["latency_batch"] == 2
    # latency at batch 2: a 2.0, b 3.0, d 3.5 -> monotone in MACs
    assert out["spearman_macs_latency_served"] == pytest.approx(1.0)
    assert out["slackfit_minus_most_accurate_attainment"] == pytest.approx(0.25)
    assert out["slackfit_accuracy_position"] == pytest.approx(0.7)  # (0.87 - 0.80) / (0.90 - 0.80)
    # batch 2, 0.5 ms per query outside the forward: d 3.5 / 2 = 1.75, fastest a 2.0 / 2 = 1.0 ms per query
    assert out["served_rate_ratio"] == pytest.approx((0.5 + 1.75) / (0.5 + 1.0))


def test_predictor_error_is_measured_on_its_proposals_only():
    def subnet(label, val, predicted=math.nan):
        return SimpleNamespace(label=label, val_accuracy=val, predicted_val_accuracy=predicted)

    fitted = [subnet("min", 0.50), subnet("max", 0.90), subnet("random", 0.70)]
    assert predictor_dict(fitted) is None
    proposed = [subnet("predicted", 0.60, 0.62), subnet("predicted", 0.80, 0.76), subnet("predicted", 0.70, 0.78)]
    out = predictor_dict(fitted + proposed)
    assert out["fitted_on"] == 3 and out["proposals"] == 3
    # errors +0.02, -0.04, +0.08: RMSE sqrt(0.0084 / 3); ranks 1 2 3 vs 1 3 2: 1 - 6 * 2 / (3 * 8) = 0.5
    assert out["rmse"] == pytest.approx(math.sqrt(0.0084 / 3))
    assert out["spearman"] == pytest.approx(0.5)
    assert "none of which it was fitted on" in out["metric"] and out["settings"]["hidden_size"] == 32


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
    cfg = PipelineConfig(dataset="cifar10", data_root=str(tmp_path / "none"), download=False).validate()
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 is not under .*none/cifar-10-batches-py and downloading "
                                                r"is off \(--no-download\).*allow the download"):
        make_datamodule(cfg, 32)


def test_fashion_mnist_is_read_from_torchvision_files_under_data_root(tmp_path):
    import numpy as np

    from ws_core.data import write_idx

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 5040), ("t10k", 40)):  # the data module holds 5,000 out for validation
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10)
    cfg = PipelineConfig(dataset="fashion_mnist", data_root=str(tmp_path), download=False, train_size=None,
                         batch_size=16).validate()
    dm = make_datamodule(cfg, 28)
    dm.prepare_data()
    dm.setup("fit")
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape[1:] == (3, 28, 28) and len(dm.test_set) == 40 and dm.num_classes == 10


# The whole pipeline at a reduced size ------------------------------------------------------------------------
def test_pipeline_trains_searches_serves_and_reports(tmp_path, capsys):
    code = main(["demo", "--dataset", "digits", "--epochs", "2", "--batch-size", "32", "--train-size", "320",
                 "--candidates", "3", "--predictor-candidates", "2", "--bn-batches", "2", "--served-subnets", "3",
                 "--max-batch", "4",
                 "--trace-seconds", "3", "--repeats", "2", "--cv2", "4",
                 "--out", str(tmp_path), "--name", "run", "--no-progress-bar"])
    assert code == 0
    run = tmp_path / "run"
    out = capsys.readouterr().out
    assert f"report: {run / 'report.md'}" in out
    assert "Tip:" not in out and "litlogger" not in out  # no third-party banners
    for name in ("report.md", "accuracy_vs_macs.png", "serving_timeline.png", "results.json", "config.json",
                 "trace.csv", "supernet.safetensors", "supernet.safetensors.served.json",
                 "supernet.safetensors.subnetnorm.safetensors", "server-slackfit-0.log", "server-slackfit-1.log",
                 "server-calibration.log"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    for png in ("accuracy_vs_macs.png", "serving_timeline.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    results = json.loads((run / "results.json").read_text())
    subnets = {s["label"] if s["label"] in ("min", "max") else s["id"]: s for s in results["subnets"]}
    assert len(results["subnets"]) == 7 and {"min", "max"} <= set(subnets)
    # 3 candidates: a third drawn at random, the rest mutations of the Pareto front found so far; then 2
    # proposed by the accuracy predictor fitted on those 5
    assert [s["label"] for s in results["subnets"]] == ["min", "max", "random", "mutation", "mutation",
                                                        "predicted", "predicted"]
    proposed = [s for s in results["subnets"] if s["label"] == "predicted"]
    assert all(0 <= s["predicted_val_accuracy"] <= 1 for s in proposed)
    assert all(s["predicted_val_accuracy"] is None for s in results["subnets"] if s["label"] != "predicted")
    predictor = results["predictor"]
    assert predictor["fitted_on"] == 5 and predictor["proposals"] == 2 and 0 <= predictor["rmse"] < 1
    assert predictor["spearman"] is None or -1 <= predictor["spearman"] <= 1
    assert subnets["max"]["accuracy"] > 0.2          # 10 classes: chance is 0.1
    assert all(0 <= s["accuracy"] <= 1 and 0 <= s["val_accuracy"] <= 1 for s in results["subnets"])
    assert subnets["min"]["macs"] < subnets["max"]["macs"]
    served = [s for s in results["subnets"] if s["served"]]
    assert 1 <= len(served) <= 3 and all(s["pareto"] for s in served)
    assert results["slo_ms"] > 0 and results["overhead_ms"] >= 0 and results["capacity_qps"] > 0
    assert results["rate_qps"] == pytest.approx(0.7 * results["capacity_qps"])
    assert sorted(results["profile"]["subnet_ids"]) == sorted(s["id"] for s in served)
    assert len(results["profile"]["latency_ms"]) == len(served)
    assert set(results["summary"]) >= {"max_minus_min_accuracy", "spearman_macs_accuracy", "pareto_subnets",
                                       "served_subnets", "spearman_macs_latency_served"}

    policies = [r["policy"] for r in results["serving"]]
    most = max(served, key=lambda s: (s["accuracy"], s["macs"]))["id"]
    assert policies[:2] == ["slackfit", f"fixed:{most}"]
    assert results["trace"]["repeats"] == 2
    for r in results["serving"]:
        assert len(r["repeats"]) == 2
        for rep, queries in zip(r["repeats"], results["trace"]["queries_per_repeat"]):
            assert rep["sent"] == queries > 0
            assert sum(rep["statuses"].values()) == rep["sent"]            # one outcome per query
        assert r["slo_attainment"] == pytest.approx(sum(rep["slo_attainment"] for rep in r["repeats"]) / 2)
        low, high = r["slo_attainment_range"]
        assert 0.0 <= low <= r["slo_attainment"] <= high <= 1.0
        assert all(a is None or 0 <= a <= 1 for a in r["timeline"]["slo_attainment"])
        if r["mean_accuracy"] is not None:
            assert min(s["accuracy"] for s in served) - 1e-9 <= r["mean_accuracy"] <= max(
                s["accuracy"] for s in served) + 1e-9
    fixed = next(r for r in results["serving"] if r["policy"] == f"fixed:{most}")
    assert all(sid == most for rep in fixed["repeats"] for sid in rep["subnets"])

    report = (run / "report.md").read_text()
    assert "![accuracy vs MACs](accuracy_vs_macs.png)" in report
    assert "![serving timeline](serving_timeline.png)" in report
    assert re.search(r"SlackFit \| [01]\.\d{3} \([01]\.\d{3}–[01]\.\d{3}\) \|", report)
    assert f"{100 * subnets['max']['accuracy']:.2f}" in report
    assert "its error on the 2 SubNets it proposed, which it did not train on: RMSE" in report
    # the room to trade: the run's profile and handling cost, as results.json and the report state it
    room = served_rate_ratio(Profile.from_dict(results["profile"]), results["query_cost_ms"])
    assert results["summary"]["served_rate_ratio"] == pytest.approx(room) and room >= 1.0
    assert f"drains a backlog {room:.2f}× as fast as the most accurate one" in report

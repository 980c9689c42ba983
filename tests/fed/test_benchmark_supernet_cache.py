"""The SuperFedNAS-vs-FedAvg benchmark: it keeps a trained SuperNet and reuses it only for equal settings,
and pools repetitions (seeds) into per-target mean gaps and summed-cost ratios."""

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


def fake_run(seed, deltas, sfn=(100, 1000), fedavg=((90, 800), (120, 1000)), distinct=(2.0, 1.5), accs=(0.98, 0.97)):
    """A benchmark payload with two targets: just the fields ``summarise`` reads."""
    fa_macs, fa_bytes = sum(f[0] for f in fedavg), sum(f[1] for f in fedavg)
    return {
        "args": {"seed": seed},
        "superfednas": {"client_macs": sfn[0], "bytes": sfn[1]},
        "specialisation": [{"target": f"T{i + 1}", "budget": f"MACs <= {i + 1}M", "macs": 1e6 * (i + 0.5),
                            "test_accuracy": accs[i]} for i in range(2)],
        "fedavg": [{"client_macs": m, "bytes": b, "accuracy": accs[i] - deltas[i] / 100}
                   for i, (m, b) in enumerate(fedavg)],
        "ratios": {"client_macs": fa_macs / sfn[0], "bytes": fa_bytes / sfn[1],
                   "client_macs_distinct": distinct[0], "bytes_distinct": distinct[1]},
        "deltas_points": list(deltas),
    }


def test_summary_pools_runs_per_target_and_sums_costs(bench):
    runs = [fake_run(0, (-1.5, 0.0)),                                    # ratios 2.1 / 1.8: misses
            fake_run(1, (0.5, -0.6), sfn=(50, 500), fedavg=((100, 1000), (100, 1000)), distinct=(3.0, 3.0))]
    summary = bench.summarise(runs)
    assert summary["seeds"] == [0, 1]
    t1, t2 = summary["targets"]
    assert t1["deltas_points"] == [-1.5, 0.5] and t1["mean_delta_points"] == pytest.approx(-0.5)
    assert t1["sem_delta_points"] == pytest.approx(1.0)          # sd sqrt(2) over sqrt(2) runs
    assert t2["mean_delta_points"] == pytest.approx(-0.3)
    assert t1["mean_subnet_macs"] == pytest.approx(0.5e6)
    # costs are summed before dividing: (210 + 200) / (100 + 50) and (1800 + 2000) / (1000 + 500)
    assert summary["ratios"]["client_macs"] == pytest.approx(410 / 150)
    assert summary["ratios"]["bytes"] == pytest.approx(3800 / 1500)
    assert summary["ratios"]["client_macs_distinct"] == pytest.approx((2.0 * 100 + 3.0 * 50) / 150)
    assert summary["goal_met_per_run"] == [False, True] and summary["runs_meeting_goal"] == 1
    assert summary["goal_met_on_means"] is False                   # 2.73x < 3x although both means are within 1

    cheap = [fake_run(s, d, sfn=(10, 100)) for s, d in ((0, (-1.5, 0.2)), (1, (0.0, -0.4)), (2, (-0.9, 0.1)))]
    pooled = bench.summarise(cheap)
    assert [t["mean_delta_points"] for t in pooled["targets"]] == pytest.approx([-0.8, -0.1 / 3])
    assert pooled["goal_met_on_means"] is True and pooled["goal_met_per_run"] == [False, True, True]
    assert pooled["goal_met_on_means_distinct"] is False          # distinct ratios 2.0 / 1.5


def test_summary_refuses_mismatched_or_repeated_runs(bench):
    other = fake_run(1, (0.0, 0.0))
    other["specialisation"][1]["budget"] = "MACs <= 9M"
    with pytest.raises(ValueError, match="runs have different targets"):
        bench.summarise([fake_run(0, (0.0, 0.0)), other])
    with pytest.raises(ValueError, match="a seed appears twice"):
        bench.summarise([fake_run(0, (0.0, 0.0)), fake_run(0, (0.0, 0.0))])
    with pytest.raises(ValueError, match="no runs"):
        bench.summarise([])


def test_seeds_argument(bench):
    args = bench.parse_args(["--seeds", "3,1", "--save-supernet", "/x/sfn_{seed}.safetensors"])
    assert args.seed_list == [3, 1]
    assert bench.for_seed(args, 1).save_supernet == "/x/sfn_1.safetensors" and bench.for_seed(args, 1).seed == 1
    assert bench.parse_args(["--seed", "4"]).seed_list == [4]
    for argv in (["--seeds", "0,x"], ["--seeds", "1,1"], ["--seeds", "0,1", "--load-supernet", "/x/sfn.safetensors"]):
        with pytest.raises(SystemExit):
            bench.parse_args(argv)


def test_summary_counts_fedavg_once_per_distinct_subnet_from_the_runs_themselves(bench):
    """Runs that carry their distinct FedAvg trainings: T1 -> run 0, T2 -> run 1 in the first run,
    both targets -> run 0 in the second (one FedAvg training serves both targets)."""
    first = {**fake_run(0, (0.0, 0.0)), "fedavg_distinct": [{"client_macs": 90, "bytes": 800},
                                                            {"client_macs": 120, "bytes": 1000}],
             "target_subnets": [0, 1]}
    second = {**fake_run(1, (0.0, 0.0), fedavg=((150, 1200), (150, 1200))),
              "fedavg_distinct": [{"client_macs": 150, "bytes": 1200}], "target_subnets": [0, 0]}
    assert bench.run_cost(second).per_distinct_subnet == {"client_macs": 150, "bytes": 1200}
    summary = bench.summarise([first, second])
    assert summary["ratios"]["client_macs"] == pytest.approx((210 + 300) / 200)        # per target
    assert summary["ratios"]["client_macs_distinct"] == pytest.approx((210 + 150) / 200)
    assert summary["ratios"]["bytes_distinct"] == pytest.approx((1800 + 1200) / 2000)

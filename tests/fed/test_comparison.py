"""``ws_fed.comparison``, the logic of the SuperFedNAS-vs-FedAvg benchmark: it keeps a trained SuperNet and
reuses it only for equal settings, and pools repetitions (seeds) into per-target mean gaps and summed-cost ratios."""

from __future__ import annotations

import math

import pytest
import torch

from ws_core.checkpoint import CheckpointError
from ws_fed import FedConfig
from ws_fed.comparison import goal_met, parse_seeds, run_cost, seeded_path, summarise, superfednas, training_settings


def small_config(**changes) -> FedConfig:
    """The benchmark's settings for ``--clients 4 --rounds 1 --batch-size 64`` (its defaults otherwise)."""
    return FedConfig(num_server_rounds=1, fraction_train=0.4, min_train_nodes=2, min_available_nodes=2,
                     local_epochs=2, batch_size=64, partitioner="dirichlet", beta_initial=0.5, **changes)


def test_saved_supernet_is_reused_with_its_cost_and_refused_for_other_settings(tmp_path):
    path = str(tmp_path / "sfn.safetensors")
    trained, cost, seconds = superfednas(small_config(), 4, save=path)
    assert cost["client_macs"] > 0 and seconds > 0

    # the search criterion is not a training setting: a run searching by loss may reuse the SuperNet
    loaded, loaded_cost, loaded_seconds = superfednas(small_config(search_criterion="loss"), 4, load=path)
    assert loaded_cost == cost and loaded_seconds == seconds
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=key)

    with pytest.raises(CheckpointError, match="trained with other settings"):
        superfednas(small_config().replace(num_server_rounds=2), 4, load=path)
    with pytest.raises(CheckpointError, match="trained with other settings"):   # the number of clients counts too
        superfednas(small_config(), 5, load=path)


def test_training_settings_leave_out_the_search_and_keep_the_data():
    settings = training_settings(small_config(search_population=3, target_macs="1e6"), 4)
    assert settings["clients"] == 4 and settings["num-server-rounds"] == 1 and settings["dataset"] == "digits"
    assert not {"search-population", "search-generations", "search-criterion", "search-share-candidates",
                "target-macs", "output-dir"} & set(settings)
    assert training_settings(small_config(dataset="fashion-mnist", train_size=100), 4) != settings


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


def test_summary_pools_runs_per_target_and_sums_costs():
    runs = [fake_run(0, (-1.5, 0.0)),                                    # ratios 2.1 / 1.8: misses
            fake_run(1, (0.5, -0.6), sfn=(50, 500), fedavg=((100, 1000), (100, 1000)), distinct=(3.0, 3.0))]
    summary = summarise(runs)
    assert summary["seeds"] == [0, 1]
    t1, t2 = summary["targets"]
    assert t1["deltas_points"] == [-1.5, 0.5] and t1["mean_delta_points"] == pytest.approx(-0.5)
    assert t1["sem_delta_points"] == pytest.approx(1.0)          # sd sqrt(2) over sqrt(2) runs
    assert t2["mean_delta_points"] == pytest.approx(-0.3)
    assert t1["mean_subnet_macs"] == pytest.approx(0.5e6)
    # 95 % t interval with 1 degree of freedom: -0.5 ± 12.706 × 1.0 contains 0
    assert t1["gap_separated"] is False
    # costs are summed before dividing: (210 + 200) / (100 + 50) and (1800 + 2000) / (1000 + 500)
    assert summary["ratios"]["client_macs"] == pytest.approx(410 / 150)
    assert summary["ratios"]["bytes"] == pytest.approx(3800 / 1500)
    assert summary["ratios"]["client_macs_distinct"] == pytest.approx((2.0 * 100 + 3.0 * 50) / 150)
    assert summary["goal_met_per_run"] == [False, True] and summary["runs_meeting_goal"] == 1
    assert summary["goal_met_on_means"] is False                   # 2.73x < 3x although both means are within 1

    cheap = [fake_run(s, d, sfn=(10, 100)) for s, d in ((0, (-1.5, 0.2)), (1, (0.0, -0.4)), (2, (-0.9, 0.1)))]
    pooled = summarise(cheap)
    assert [t["mean_delta_points"] for t in pooled["targets"]] == pytest.approx([-0.8, -0.1 / 3])
    # T1: deviations -0.7, 0.8, -0.1 -> s² = 1.14 / 2 = 0.57, se = sqrt(0.57 / 3) = 0.4359; 4.303 × se > 0.8
    assert pooled["targets"][0]["sem_delta_points"] == pytest.approx(math.sqrt(0.57 / 3))
    assert pooled["targets"][0]["gap_separated"] is False
    assert pooled["goal_met_on_means"] is True and pooled["goal_met_per_run"] == [False, True, True]
    assert pooled["goal_met_on_means_distinct"] is False          # distinct ratios 2.0 / 1.5


def test_summary_of_one_run_has_no_standard_error_and_separates_nothing():
    (t1, _) = summarise([fake_run(0, (-1.5, 0.0))])["targets"]
    assert t1["mean_delta_points"] == -1.5 and math.isnan(t1["sem_delta_points"]) and t1["gap_separated"] is False


def test_summary_refuses_mismatched_or_repeated_runs():
    other = fake_run(1, (0.0, 0.0))
    other["specialisation"][1]["budget"] = "MACs <= 9M"
    with pytest.raises(ValueError, match="runs have different targets"):
        summarise([fake_run(0, (0.0, 0.0)), other])
    with pytest.raises(ValueError, match="a seed appears twice"):
        summarise([fake_run(0, (0.0, 0.0)), fake_run(0, (0.0, 0.0))])
    with pytest.raises(ValueError, match="no runs"):
        summarise([])


def test_goal():
    assert goal_met([3.0, 3.5], [-1.0, 0.2]) is True
    assert goal_met([2.99, 3.5], [0.0]) is False and goal_met([3.0], [-1.01]) is False


def test_seeds_and_seeded_paths():
    assert parse_seeds("3,1") == [3, 1] and parse_seeds("4") == [4]
    assert seeded_path("/x/sfn_{seed}.safetensors", 1) == "/x/sfn_1.safetensors"
    assert seeded_path(None, 1) is None and seeded_path("/x/sfn.safetensors", 2) == "/x/sfn.safetensors"
    with pytest.raises(ValueError, match="seeds must be comma-separated integers, got '0,x'"):
        parse_seeds("0,x")
    with pytest.raises(ValueError, match="seeds must not repeat a seed, got '1,1'"):
        parse_seeds("1,1")


def test_summary_counts_fedavg_once_per_distinct_subnet_from_the_runs_themselves():
    """Runs that carry their distinct FedAvg trainings: T1 -> run 0, T2 -> run 1 in the first run,
    both targets -> run 0 in the second (one FedAvg training serves both targets)."""
    first = {**fake_run(0, (0.0, 0.0)), "fedavg_distinct": [{"client_macs": 90, "bytes": 800},
                                                            {"client_macs": 120, "bytes": 1000}],
             "target_subnets": [0, 1]}
    second = {**fake_run(1, (0.0, 0.0), fedavg=((150, 1200), (150, 1200))),
              "fedavg_distinct": [{"client_macs": 150, "bytes": 1200}], "target_subnets": [0, 0]}
    assert run_cost(second).per_distinct_subnet == {"client_macs": 150, "bytes": 1200}
    assert run_cost(second).num_distinct == 1 and run_cost(second).num_targets == 2
    summary = summarise([first, second])
    assert summary["ratios"]["client_macs"] == pytest.approx((210 + 300) / 200)        # per target
    assert summary["ratios"]["client_macs_distinct"] == pytest.approx((210 + 150) / 200)
    assert summary["ratios"]["bytes_distinct"] == pytest.approx((1800 + 1200) / 2000)


def test_run_cost_of_a_payload_without_distinct_runs_reads_the_ratios():
    cost = run_cost(fake_run(0, (0.0, 0.0)))            # distinct ratios 2.0 / 1.5 of SuperFedNAS's 100 / 1000
    assert cost.per_target == {"client_macs": 210, "bytes": 1800}
    assert cost.per_distinct_subnet == {"client_macs": 200, "bytes": 1500}

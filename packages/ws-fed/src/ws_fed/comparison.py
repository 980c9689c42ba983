"""SuperFedNAS against FedAvg per target: the parts of the comparison that are more than printing.

``benchmarks/fed_superfednas_vs_fedavg.py`` is a command-line front end to these functions:

* :func:`train_inprocess` — one federated training (SuperFedNAS, or FedAvg of one SubNet) through the
  ws-fed ClientApp on an :class:`~ws_fed.inprocess.InProcessGrid`; :func:`fedavg_run` — one target's
  FedAvg training and its test accuracy (a plain function, so worker processes can run it).
* :func:`superfednas` — the trained SuperNet with its measured cost and wall time, trained here or
  loaded from a checkpoint written with the same :func:`training_settings` (refused otherwise).
* :func:`run_cost` / :func:`goal_met` — one run's cost accounting (``ws_fed.accounting``) and the goal
  (every cost ratio ≥ 3, every target within 1 point of FedAvg).
* :func:`summarise` — repetitions (seeds) pooled: per target the mean accuracy gap ± its standard
  error (``ws_core.stats``), the cost ratios of the summed costs, both ways (per distinct SubNet and
  per target), and which goals the single runs and the means meet.
* :func:`parse_seeds` / :func:`seeded_path` — the ``--seeds`` list and ``{seed}`` in checkpoint paths.

Example (two pooled runs; :func:`summarise` reads the benchmark's JSON payloads)::

    >>> goal_met([3.2, 4.0], [-0.4, 0.3]), goal_met([2.9, 4.0], [0.0]), goal_met([3.0], [-1.2])
    (True, False, False)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ws_core import SubNetConfig, SuperNet
from ws_core.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_metadata, save_checkpoint
from ws_core.stats import mean_se, separated

from .accounting import BaselineCost, baseline_cost, pool_baseline_costs
from .client_app import app as client_app
from .config import FedConfig
from .federated import FederatedRun, evaluators, run_federated
from .inprocess import InProcessGrid
from .task import build_supernet, load_data

__all__ = [
    "fedavg_run",
    "goal_met",
    "parse_seeds",
    "run_cost",
    "seeded_path",
    "summarise",
    "superfednas",
    "train_inprocess",
    "training_settings",
]

#: run-config keys that do not change the SuperNet training (a saved SuperNet is reused across them)
_NOT_TRAINING = ("search-population", "search-generations", "search-criterion", "search-share-candidates",
                 "target-macs", "output-dir")


def train_inprocess(cfg: FedConfig, num_clients: int, subnet: Mapping[str, Any] | SubNetConfig | None = None
                    ) -> tuple[FederatedRun, float]:
    """Train ``cfg.num_server_rounds`` rounds with ``num_clients`` in-process ClientApps: SuperFedNAS, or
    FedAvg of ``subnet``, from :func:`~ws_fed.task.build_supernet`'s weights seeded by ``cfg.seed``.
    Returns the run and its wall time in seconds."""
    t0 = time.perf_counter()
    with InProcessGrid(client_app, num_nodes=num_clients, run_config=cfg.to_run_config()) as grid:
        run = run_federated(grid, cfg, net=build_supernet(cfg.model, cfg.image_size, seed=cfg.seed), subnet=subnet)
    return run, time.perf_counter() - t0


def fedavg_run(cfg: FedConfig, num_clients: int, name: str, subnet: Mapping[str, Any] | SubNetConfig) -> dict:
    """Train one target's SubNet with FedAvg and measure it: ``{"target", "accuracy" (test, fraction),
    "seconds", "client_macs", "bytes", ...}`` (the strategy's ``total_cost()``)."""
    run, seconds = train_inprocess(cfg, num_clients, subnet=subnet)
    _, test_acc = evaluators(run.net, load_data(cfg), cfg)
    return {"target": name, "accuracy": test_acc(subnet), "seconds": seconds, **run.strategy.total_cost()}


def training_settings(cfg: FedConfig, num_clients: int) -> dict:
    """What determines a SuperFedNAS training (search settings excluded): a saved SuperNet is reused only if equal."""
    settings = cfg.to_run_config()
    for key in _NOT_TRAINING:
        settings.pop(key, None)
    return {"clients": num_clients, **settings}


def superfednas(cfg: FedConfig, num_clients: int, *, save: str | None = None, load: str | None = None
                ) -> tuple[SuperNet, dict, float]:
    """The trained SuperNet, its client training cost and wall time.

    Trained here with :func:`train_inprocess` (and written to ``save`` if given, with its settings, cost
    and wall time), or read from ``load``, a checkpoint written that way.

    Raises:
        CheckpointError: if ``load`` was trained with other :func:`training_settings` than ``cfg`` and
            ``num_clients`` give.
    """
    settings = training_settings(cfg, num_clients)
    if load:
        extra = read_checkpoint_metadata(load)["extra"]
        if extra.get("settings") != settings:
            raise CheckpointError(f"{load}: trained with other settings\n"
                                  f"  checkpoint: {extra.get('settings')}\n  this run:   {settings}")
        net = build_supernet(cfg.model, cfg.image_size, seed=cfg.seed)
        load_checkpoint(net, load)
        return net, extra["cost"], extra["seconds"]
    sfn, seconds = train_inprocess(cfg, num_clients)
    cost = sfn.strategy.total_cost()
    if save:
        save_checkpoint(sfn.net, save, extra={"model": cfg.model, "image_size": cfg.image_size, "seed": cfg.seed,
                                              "settings": settings, "cost": cost, "seconds": seconds})
    return sfn.net, cost, seconds


def run_cost(run: Mapping[str, Any]) -> BaselineCost:
    """The cost accounting of one run's JSON payload; payloads written before ``fedavg_distinct`` existed
    carry the distinct-SubNet totals only as ratios, which are turned back into totals."""
    if "fedavg_distinct" in run:
        return baseline_cost(run["superfednas"], run["target_subnets"],
                             {i: f for i, f in enumerate(run["fedavg_distinct"])})
    sfn = {k: float(run["superfednas"][k]) for k in ("client_macs", "bytes")}
    per_target = {k: float(sum(f[k] for f in run["fedavg"])) for k in sfn}
    distinct = {k: run["ratios"][f"{k}_distinct"] * sfn[k] for k in sfn}
    return BaselineCost(sfn, per_target, distinct, len(run["fedavg"]), len(run["fedavg"]))


def goal_met(ratios: Sequence[float], deltas: Sequence[float]) -> bool:
    """The benchmark's goal: every cost ratio >= 3 and every target within 1 point of FedAvg
    (``deltas``: SuperFedNAS − FedAvg test accuracy per target, in points)."""
    return min(ratios) >= 3 and min(deltas) >= -1.0


def summarise(runs: Sequence[Mapping[str, Any]]) -> dict:
    """Pool repetitions of the benchmark (their JSON payloads): per target the mean accuracy gap over
    the runs ± its standard error, and the cost ratios of the summed costs.

    A single run compares two accuracies on one test split; the mean over independent repetitions is
    the estimate the goal's "within 1 point" can be read on. Per target, ``mean_delta_points`` /
    ``sem_delta_points`` are ``ws_core.stats.mean_se`` of the per-run gaps (``nan`` standard error for
    one run) and ``gap_separated`` says whether the 95 % t interval of the gap excludes 0
    (``ws_core.stats.separated``). Each run's own verdict is kept beside it.

    Raises:
        ValueError: for no runs, runs with different targets, or a seed that appears twice.
    """
    if not runs:
        raise ValueError("summarise: no runs")

    def targets_of(run: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [(s["target"], s["budget"]) for s in run["specialisation"]]

    for run in runs[1:]:
        if targets_of(run) != targets_of(runs[0]):
            raise ValueError(f"summarise: runs have different targets: {targets_of(runs[0])} vs {targets_of(run)}")
    names = [name for name, _ in targets_of(runs[0])]
    budgets = [budget for _, budget in targets_of(runs[0])]
    seeds = [run["args"]["seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"summarise: a seed appears twice: {seeds}")
    n = len(runs)
    targets = []
    for i, name in enumerate(names):
        deltas = [run["deltas_points"][i] for run in runs]
        gap = mean_se(deltas)
        targets.append({
            "target": name, "budget": budgets[i], "deltas_points": deltas, "mean_delta_points": gap.mean,
            "sem_delta_points": gap.se, "gap_separated": separated(gap),
            "mean_subnet_macs": sum(run["specialisation"][i]["macs"] for run in runs) / n,
            "mean_superfednas_accuracy": sum(run["specialisation"][i]["test_accuracy"] for run in runs) / n,
            "mean_fedavg_accuracy": sum(run["fedavg"][i]["accuracy"] for run in runs) / n,
        })
    ratios = pool_baseline_costs([run_cost(run) for run in runs]).ratios()
    per_run = [goal_met([run["ratios"]["client_macs"], run["ratios"]["bytes"]], run["deltas_points"]) for run in runs]
    per_run_distinct = [goal_met([run["ratios"]["client_macs_distinct"], run["ratios"]["bytes_distinct"]],
                                 run["deltas_points"]) for run in runs]
    mean_deltas = [t["mean_delta_points"] for t in targets]
    return {
        "seeds": seeds, "targets": targets, "ratios": ratios, "runs_meeting_goal": sum(per_run),
        "goal_met_per_run": per_run, "runs_meeting_goal_distinct": sum(per_run_distinct),
        "goal_met_per_run_distinct": per_run_distinct,
        "goal_met_on_means": goal_met([ratios["client_macs"], ratios["bytes"]], mean_deltas),
        "goal_met_on_means_distinct": goal_met([ratios["client_macs_distinct"], ratios["bytes_distinct"]],
                                               mean_deltas),
    }


def parse_seeds(text: str) -> list[int]:
    """``"3,1"`` → ``[3, 1]``: comma-separated, distinct integers.

    Raises:
        ValueError: naming what is allowed and the text received.
    """
    try:
        seeds = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"seeds must be comma-separated integers, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must not repeat a seed, got {text!r}")
    return seeds


def seeded_path(path: str | None, seed: int) -> str | None:
    """``path`` with ``{seed}`` replaced by ``seed`` (``None`` stays ``None``)."""
    return path.replace("{seed}", str(seed)) if path else path

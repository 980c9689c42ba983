"""The Flower ServerApp: SuperFedNAS training, then evaluation and one-shot specialisation.

Run it with ``flwr run packages/ws-fed <superlink>`` (simulation or deployment; see the README). The
run config (``[tool.flwr.app.config]``, overridable with ``--run-config``) sets the rounds, sampling,
local training, β schedule and the MAC budgets ``target-macs`` to specialise to after training. With
``output-dir`` set, the trained SuperNet (``supernet.safetensors``, ws-core's checkpoint format) and a
``summary.json`` (costs per round, accuracies, specialised SubNets) are written there.
"""

from __future__ import annotations

from logging import INFO
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from ws_core.checkpoint import save_checkpoint

from .config import FedConfig
from .federated import evaluators, round_costs, run_federated, specialise_targets, write_json
from .specialise import DeploymentTarget, format_table
from .task import load_data

__all__ = ["app", "main"]

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Train, report the max/min SubNets' test accuracy, specialise to ``target-macs``, save."""
    cfg = FedConfig.from_run_config(context.run_config)
    run = run_federated(grid, cfg)
    net, strategy = run.net, run.strategy
    data = load_data(cfg)
    _, test_acc = evaluators(net, data, cfg)
    space = net.space
    summary: dict = {
        "config": cfg.to_run_config(),
        "cost": strategy.total_cost(),
        "rounds": round_costs(strategy),
        "test_accuracy": {"max": test_acc(space.max()), "min": test_acc(space.min())},
    }
    log(INFO, "SuperFedNAS finished: cost %s; test accuracy max SubNet %.4f, min SubNet %.4f",
        summary["cost"], summary["test_accuracy"]["max"], summary["test_accuracy"]["min"])

    budgets = cfg.target_mac_budgets()
    if budgets:
        targets = [DeploymentTarget(f"macs<={b / 1e6:g}M", max_macs=b) for b in budgets]
        specs = specialise_targets(net, cfg, targets, data)
        summary["specialisation"] = [s.to_dict() for s in specs]
        log(INFO, "One-shot specialisation (no retraining):\n%s", format_table(specs))

    if cfg.output_dir:
        out = Path(cfg.output_dir)
        save_checkpoint(net, out / "supernet.safetensors",
                        extra={"model": cfg.model, "image_size": cfg.image_size, "seed": cfg.seed,
                               "bn_mode": cfg.bn_mode, "dataset": cfg.dataset, "data_root": cfg.data_root,
                               "train_size": cfg.train_size})
        write_json(out / "summary.json", summary)
        log(INFO, "Wrote %s and %s", out / "supernet.safetensors", out / "summary.json")

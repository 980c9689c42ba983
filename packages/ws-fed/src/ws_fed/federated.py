"""Running SuperFedNAS (or the FedAvg baseline) on any Flower ``Grid``, then specialising the result.

The ServerApp (``flwr run``), the :class:`~ws_fed.inprocess.InProcessGrid` and the benchmark all go
through :func:`run_federated`, so the strategy, messages and aggregation are the same code everywhere.

Example::

    >>> from ws_fed import FedConfig, InProcessGrid, run_federated
    >>> from ws_fed.client_app import app as client_app
    >>> cfg = FedConfig(num_server_rounds=2, local_steps=2)
    >>> with InProcessGrid(client_app, num_nodes=4, run_config=cfg.to_run_config()) as grid:  # doctest: +SKIP
    ...     run = run_federated(grid, cfg)
    >>> run.strategy.total_cost()                                                            # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from ws_core import SubNetConfig, SuperNet
from ws_core.io import atomic_write_json

from .config import FedConfig
from .specialise import DeploymentTarget, Specialisation, SubNetAccuracy, specialise
from .strategy import FedAvgSubNet, SuperFedNAS
from .task import DataSplits, build_supernet, load_data, make_loader, set_identity_bn

__all__ = [
    "FederatedRun",
    "evaluators",
    "make_strategy",
    "round_costs",
    "run_federated",
    "specialise_targets",
    "train_config_record",
    "write_json",
]


def train_config_record(cfg: FedConfig) -> ConfigRecord:
    """The local-training settings the server sends with every train message."""
    return ConfigRecord({
        "lr": float(cfg.lr), "local-epochs": int(cfg.local_epochs), "local-steps": int(cfg.local_steps),
        "batch-size": int(cfg.batch_size), "momentum": float(cfg.momentum),
        "weight-decay": float(cfg.weight_decay), "max-grad-norm": float(cfg.max_grad_norm),
    })


def make_strategy(net: SuperNet, cfg: FedConfig, subnet: Mapping[str, Any] | SubNetConfig | None = None
                  ) -> SuperFedNAS:
    """:class:`SuperFedNAS` configured by ``cfg``; with ``subnet``, the :class:`FedAvgSubNet` baseline."""
    common = dict(
        fraction_train=cfg.fraction_train, min_train_nodes=cfg.min_train_nodes,
        min_available_nodes=cfg.min_available_nodes, min_train_replies=cfg.min_train_replies,
        fraction_evaluate=cfg.fraction_evaluate, seed=cfg.seed, lr_schedule=cfg.lr_schedule, lr_final=cfg.lr_final,
    )
    if subnet is not None:
        return FedAvgSubNet(net, subnet, **common)
    beta_final = None if cfg.beta_final == "uniform" else float(cfg.beta_final)
    return SuperFedNAS(
        net, top_k_maxnet=cfg.top_k_maxnet, bottom_k_minnet=cfg.bottom_k_minnet,
        beta_initial=cfg.beta_initial, beta_final=beta_final, beta_decay_rounds=cfg.beta_decay_rounds(),
        weight_by_num_examples=cfg.weight_by_examples, **common,
    )


@dataclass
class FederatedRun:
    """A finished federated training: the SuperNet with the final global weights, the strategy
    (its ``costs``) and Flower's ``Result``."""

    net: SuperNet
    strategy: SuperFedNAS
    result: Result


def run_federated(grid: Grid, cfg: FedConfig, *, net: SuperNet | None = None,
                  subnet: Mapping[str, Any] | SubNetConfig | None = None) -> FederatedRun:
    """Train ``cfg.num_server_rounds`` rounds on ``grid``: SuperFedNAS, or FedAvg of ``subnet`` if given.

    Args:
        grid: any Flower Grid (the ServerApp's, or an :class:`~ws_fed.inprocess.InProcessGrid`).
        cfg: the run settings (must match the ClientApps' run config).
        net: the initial SuperNet (default: :func:`~ws_fed.task.build_supernet` seeded by ``cfg.seed``);
            it receives the final global weights.
        subnet: train only this fixed SubNet with FedAvg (the baseline).

    Replies that miss ``cfg.round_timeout`` seconds count as dropped out for that round. With
    ``cfg.bn_mode == "frozen"`` every BN layer of ``net`` is made an identity first (as the clients keep it).
    """
    if net is None:
        net = build_supernet(cfg.model, cfg.image_size, seed=cfg.seed)
    if cfg.bn_mode == "frozen":
        set_identity_bn(net)
    strategy = make_strategy(net, cfg, subnet)
    result = strategy.start(grid, ArrayRecord(net.state_dict()), num_rounds=cfg.num_server_rounds,
                            timeout=cfg.round_timeout, train_config=train_config_record(cfg))
    if len(result.arrays) > 0:
        net.load_state_dict(result.arrays.to_torch_state_dict())
    return FederatedRun(net=net, strategy=strategy, result=result)


def evaluators(net: SuperNet, data: DataSplits, cfg: FedConfig) -> tuple[SubNetAccuracy, SubNetAccuracy]:
    """Server-side ``(validation, test)`` scores of SubNets, BN-recalibrated on the validation split
    (not with ``cfg.bn_mode == "frozen"``: BN is then an identity, and stays one).

    The validation scorer ranks by ``cfg.search_criterion``; the test scorer always reports accuracy.
    """
    val = make_loader(data.val, 256, shuffle=False)
    bn = None if cfg.bn_mode == "frozen" else make_loader(data.val, cfg.batch_size, shuffle=True, seed=cfg.seed)
    test = make_loader(data.test, 256, shuffle=False)
    return (SubNetAccuracy(net, val, bn_loader=bn, bn_batches=cfg.bn_batches, criterion=cfg.search_criterion),
            SubNetAccuracy(net, test, bn_loader=bn, bn_batches=cfg.bn_batches))


def specialise_targets(net: SuperNet, cfg: FedConfig, targets: Sequence[DeploymentTarget],
                       data: DataSplits | None = None) -> list[Specialisation]:
    """One-shot specialisation of a trained SuperNet to ``targets`` (search on the validation split,
    ranked by ``cfg.search_criterion``)."""
    data = data if data is not None else load_data(cfg)
    val_acc, test_acc = evaluators(net, data, cfg)
    return specialise(net, targets, val_acc, test=test_acc, population_size=cfg.search_population,
                      generations=cfg.search_generations, seed=cfg.seed,
                      share_candidates=cfg.search_share_candidates)


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write JSON atomically (``ws_core.io.atomic_write_json``; values JSON cannot hold are written as ``str``)."""
    return atomic_write_json(path, payload, default=str)


def round_costs(strategy: SuperFedNAS) -> list[dict[str, Any]]:
    """Per-round costs and reply counts of a strategy as plain dicts (JSON-ready)."""
    return [asdict(c) for c in strategy.costs]


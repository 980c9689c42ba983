"""ws-fed: SuperFedNAS on Flower — one SuperNet trained across clients, each training its own SubNet.

* :class:`SuperFedNAS` — a Flower strategy (message API, on ``flwr.serverapp.strategy.FedAvg``) that
  assigns SubNets by the tracking-sandwich rule, sends each client only its SubNet's weight slices and
  aggregates overlapping slices element-wise with MaxNet β weights; :class:`FedAvgSubNet` is the FedAvg
  baseline of one fixed SubNet in the same code.
* ``ws_fed.client_app:app`` / ``ws_fed.server_app:app`` — the Flower App (``flwr run packages/ws-fed``).
* :func:`dirichlet_partition` / :func:`iid_partition` — seeded federated splits of any data set.
* :func:`specialise` — one-shot search of a SubNet per deployment target (MAC or latency budget).
* :func:`baseline_cost` — the FedAvg-per-target baseline's cost, per target and per distinct SubNet.

Example::

    >>> import ws_fed
    >>> from ws_fed.client_app import app as client_app
    >>> cfg = ws_fed.FedConfig(num_server_rounds=2, local_steps=2)
    >>> with ws_fed.InProcessGrid(client_app, num_nodes=4, run_config=cfg.to_run_config()) as grid:  # doctest: +SKIP
    ...     run = ws_fed.run_federated(grid, cfg)
"""

from importlib import metadata as _metadata

from .accounting import BaselineCost, baseline_cost
from .aggregation import SubNetUpdate, aggregate_overlapping, maxnet_beta, maxnet_weights
from .config import FedConfig
from .federated import FederatedRun, run_federated
from .inprocess import InProcessGrid
from .partition import dirichlet_partition, iid_partition, partition_dataset
from .payload import InvalidSubNetArrays
from .sandwich import StaticSubNet, TrackingSandwich, tracking_sandwich
from .specialise import DeploymentTarget, Specialisation, SubNetAccuracy, format_table, specialise
from .strategy import FedAvgSubNet, RoundCost, SuperFedNAS

__all__ = [
    "BaselineCost",
    "DeploymentTarget",
    "FedAvgSubNet",
    "FedConfig",
    "FederatedRun",
    "InProcessGrid",
    "InvalidSubNetArrays",
    "RoundCost",
    "Specialisation",
    "StaticSubNet",
    "SubNetAccuracy",
    "SubNetUpdate",
    "SuperFedNAS",
    "TrackingSandwich",
    "aggregate_overlapping",
    "baseline_cost",
    "dirichlet_partition",
    "format_table",
    "iid_partition",
    "maxnet_beta",
    "maxnet_weights",
    "partition_dataset",
    "run_federated",
    "specialise",
    "tracking_sandwich",
]
__version__ = _metadata.version("ws-fed")  # single source: pyproject.toml (static for Flower)

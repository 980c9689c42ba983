"""``FedConfig``: the run settings shared by the ServerApp and the ClientApps.

Flower passes them as ``context.run_config`` (``[tool.flwr.app.config]`` in ``pyproject.toml``,
overridable with ``flwr run --run-config "num-server-rounds=5 lr=0.1"``); keys are kebab-case there
and snake_case here. :meth:`FedConfig.from_run_config` checks every value up front and names the
allowed range and the value received.

Example::

    >>> cfg = FedConfig.from_run_config({"num-server-rounds": 5, "dirichlet-alpha": 0.1})
    >>> cfg.num_server_rounds, cfg.dirichlet_alpha, cfg.partitioner
    (5, 0.1, 'dirichlet')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .aggregation import SCHEDULES
from .specialise import CRITERIA
from .task import BN_MODES, DATASETS, MIN_SUBSET

__all__ = ["FedConfig"]


def _kebab(name: str) -> str:
    return name.replace("_", "-")


@dataclass(frozen=True)
class FedConfig:
    """Settings of one SuperFedNAS run (defaults follow SuperFedNAS where it gives one)."""

    # Federation
    num_server_rounds: int = 3
    fraction_train: float = 0.4
    min_train_nodes: int = 2
    min_available_nodes: int = 2
    min_train_replies: int = 1
    round_timeout: float = 3600.0
    fraction_evaluate: float = 0.0
    seed: int = 0
    # SuperNet and data
    model: str = "ws_ofa_mbv3_035_32"
    image_size: int = 8
    dataset: str = "digits"
    data_root: str = "data"
    train_size: int = 0
    partitioner: str = "dirichlet"
    dirichlet_alpha: float = 1.0
    # Local training: SuperFedNAS's client optimizer, torch.optim.SGD(params, lr=lr, weight_decay=wd)
    # without momentum, lr 0.1 and wd 0 by default (its fedml_api/standalone/superfednas/Client/
    # ClientTrainer/subnet_trainer.py and fedml_experiments/standalone/superfednas/parse_args.py)
    local_epochs: int = 1
    local_steps: int = 0
    batch_size: int = 32
    lr: float = 0.1
    lr_schedule: str = "constant"
    lr_final: float = 0.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 10.0
    bn_mode: str = "federated"
    channels_last: bool = True
    # Assignment and aggregation
    top_k_maxnet: int = 1
    bottom_k_minnet: int = 1
    beta_initial: float = 0.9
    beta_final: float | str = "uniform"
    beta_decay_fraction: float = 0.8
    weight_by_examples: bool = False
    # One-shot specialisation
    target_macs: str = ""
    search_population: int = 16
    search_generations: int = 4
    search_criterion: str = "accuracy"
    search_share_candidates: bool = True
    bn_batches: int = 4
    output_dir: str = ""

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ValueError(f"run config {_kebab(name)!r} must be {allowed}, got {getattr(self, name)!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        for name in ("num_server_rounds", "min_train_nodes", "min_available_nodes", "min_train_replies",
                     "batch_size", "search_population", "bn_batches"):
            need(is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "an int >= 1")
        for name in ("local_epochs", "local_steps", "top_k_maxnet", "bottom_k_minnet", "search_generations",
                     "seed", "image_size"):
            need(is_int(getattr(self, name)) and getattr(self, name) >= 0, name, "an int >= 0")
        need(self.local_epochs > 0 or self.local_steps > 0, "local_epochs", "> 0 unless local-steps > 0")
        need(self.image_size >= 1, "image_size", "an int >= 1")
        need(is_num(self.round_timeout) and self.round_timeout > 0, "round_timeout", "a number of seconds > 0")
        need(is_num(self.fraction_train) and 0 < self.fraction_train <= 1, "fraction_train", "in (0, 1]")
        need(is_num(self.fraction_evaluate) and 0 <= self.fraction_evaluate <= 1, "fraction_evaluate", "in [0, 1]")
        need(isinstance(self.model, str) and bool(self.model), "model", "a timm model name")
        need(self.dataset in DATASETS, "dataset", " or ".join(repr(d) for d in DATASETS))
        need(isinstance(self.data_root, str) and bool(self.data_root), "data_root",
             "a path (non-empty string) holding FashionMNIST/raw")
        need(is_int(self.train_size) and (self.train_size == 0 or self.train_size >= MIN_SUBSET), "train_size",
             f"0 (the whole training file) or an int >= {MIN_SUBSET}")
        need(self.train_size == 0 or self.dataset == "fashion-mnist", "train_size",
             "0 with dataset 'digits' (its train split is used whole)")
        need(self.partitioner in ("iid", "dirichlet"), "partitioner", "'iid' or 'dirichlet'")
        need(is_num(self.dirichlet_alpha) and self.dirichlet_alpha > 0, "dirichlet_alpha", "a number > 0")
        need(is_num(self.lr) and self.lr > 0, "lr", "a number > 0")
        need(self.lr_schedule in SCHEDULES, "lr_schedule", "'constant', 'cosine' or 'linear'")
        need(is_num(self.lr_final) and 0 <= self.lr_final <= self.lr, "lr_final", f"a number in [0, lr={self.lr}]")
        need(is_num(self.momentum) and 0 <= self.momentum < 1, "momentum", "in [0, 1)")
        need(is_num(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(is_num(self.max_grad_norm) and self.max_grad_norm >= 0, "max_grad_norm", "a number >= 0 (0 = off)")
        need(self.bn_mode in BN_MODES, "bn_mode", " or ".join(repr(m) for m in BN_MODES))
        need(is_num(self.beta_initial) and 0 < self.beta_initial <= 1, "beta_initial", "in (0, 1]")
        need(self.beta_final == "uniform" or (is_num(self.beta_final) and 0 <= self.beta_final <= 1),
             "beta_final", "'uniform' (1/K for K clients per round) or a number in [0, 1]")
        need(is_num(self.beta_decay_fraction) and 0 < self.beta_decay_fraction <= 1,
             "beta_decay_fraction", "in (0, 1]")
        need(isinstance(self.weight_by_examples, bool), "weight_by_examples", "true or false")
        need(isinstance(self.channels_last, bool), "channels_last", "true or false")
        need(isinstance(self.search_share_candidates, bool), "search_share_candidates", "true or false")
        need(isinstance(self.output_dir, str), "output_dir", "a path (string)")
        need(self.search_criterion in CRITERIA, "search_criterion", " or ".join(repr(c) for c in CRITERIA))
        self.target_mac_budgets()  # parses or raises

    # Conversions ------------------------------------------------------------------------------
    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> FedConfig:
        """Build from Flower's ``run_config`` (kebab-case keys; unknown keys are an error)."""
        known = {_kebab(f.name): f for f in fields(cls)}
        unknown = sorted(k for k in run_config if k not in known)
        if unknown:
            raise ValueError(f"unknown run config key(s) {unknown}; allowed: {sorted(known)}")
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            f = known[key]
            if f.type in ("float", "float | str") and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            values[f.name] = value
        return cls(**values)

    def to_run_config(self) -> dict[str, Any]:
        """The kebab-case mapping Flower uses (inverse of :meth:`from_run_config`)."""
        return {_kebab(k): v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> FedConfig:
        return dataclasses.replace(self, **changes)

    def target_mac_budgets(self) -> list[float]:
        """The MAC budgets of ``target-macs`` (comma-separated numbers, e.g. ``"1.5e6, 3e6"``)."""
        text = self.target_macs.strip() if isinstance(self.target_macs, str) else None
        if text is None:
            raise ValueError(f"run config 'target-macs' must be a string of comma-separated numbers, "
                             f"got {self.target_macs!r}")
        if not text:
            return []
        try:
            budgets = [float(x) for x in text.split(",")]
        except ValueError:
            raise ValueError(f"run config 'target-macs' must be comma-separated numbers, got {text!r}") from None
        if any(not math.isfinite(b) or b <= 0 for b in budgets):
            raise ValueError(f"run config 'target-macs' must hold positive finite numbers, got {text!r}")
        return budgets

    def beta_final_for(self, clients_per_round: int) -> float:
        """``beta-final`` as a number: ``"uniform"`` is ``1 / clients_per_round`` (SuperFedNAS: 1/8 for K = 8)."""
        if self.beta_final == "uniform":
            return 1.0 / max(1, clients_per_round)
        return float(self.beta_final)

    def beta_decay_rounds(self) -> int:
        """Rounds over which β decays: ``beta-decay-fraction`` of the rounds (SuperFedNAS: 1200 of 1500)."""
        return max(1, round(self.beta_decay_fraction * self.num_server_rounds))

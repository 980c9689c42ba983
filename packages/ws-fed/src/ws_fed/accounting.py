"""Cost of the FedAvg-per-target baseline against one SuperFedNAS training, counted two ways.

The baseline trains one FedAvg model per deployment target. When several targets are given the same
SubNet, one FedAvg training of it serves them all (training is seeded, so a second one would repeat the
first exactly). :func:`baseline_cost` therefore reports both counts:

* **per target** — each target charged its own FedAvg training (K trainings for K targets);
* **per distinct SubNet** — each distinct SubNet's FedAvg training charged once.

Example (targets T1 → A, T2 → B, T3 → B)::

    >>> cost = baseline_cost({"client_macs": 100, "bytes": 10}, ["A", "B", "B"],
    ...                      {"A": {"client_macs": 50, "bytes": 4}, "B": {"client_macs": 80, "bytes": 6}})
    >>> cost.ratio("client_macs", distinct=False), cost.ratio("client_macs", distinct=True)
    (2.1, 1.3)
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["COST_KEYS", "BaselineCost", "baseline_cost", "pool_baseline_costs"]

COST_KEYS = ("client_macs", "bytes")


@dataclass(frozen=True)
class BaselineCost:
    """FedAvg-per-target totals beside SuperFedNAS's, per target and per distinct SubNet."""

    superfednas: dict[str, float]
    per_target: dict[str, float]
    per_distinct_subnet: dict[str, float]
    num_targets: int
    num_distinct: int

    def ratio(self, key: str, *, distinct: bool) -> float:
        """FedAvg / SuperFedNAS for ``key``: FedAvg counted once per distinct SubNet, or once per target."""
        fedavg = self.per_distinct_subnet if distinct else self.per_target
        return fedavg[key] / self.superfednas[key]

    def ratios(self) -> dict[str, float]:
        """``{key: per-target ratio, key + "_distinct": per-distinct-SubNet ratio}`` for every cost key."""
        out: dict[str, float] = {}
        for key in self.superfednas:
            out[key] = self.ratio(key, distinct=False)
            out[f"{key}_distinct"] = self.ratio(key, distinct=True)
        return out


def _costs(name: str, cost: Mapping[str, float], keys: Sequence[str]) -> dict[str, float]:
    missing = [k for k in keys if k not in cost]
    if missing:
        raise ValueError(f"{name} lacks cost(s) {missing}")
    return {k: float(cost[k]) for k in keys}


def baseline_cost(superfednas: Mapping[str, float], target_subnets: Sequence[Hashable],
                  subnet_costs: Mapping[Hashable, Mapping[str, float]],
                  keys: Sequence[str] = COST_KEYS) -> BaselineCost:
    """Charge the FedAvg baseline for ``target_subnets`` (the SubNet of each target, in target order).

    Args:
        superfednas: SuperFedNAS's cost of its one training (``{"client_macs": ..., "bytes": ...}``).
        target_subnets: each target's SubNet (any hashable id); targets may share one.
        subnet_costs: the cost of one FedAvg training of each SubNet in ``target_subnets``.
        keys: the costs to count.
    """
    if not target_subnets:
        raise ValueError("baseline_cost: no targets")
    sfn = _costs("superfednas", superfednas, keys)
    if any(v <= 0 for v in sfn.values()):
        raise ValueError(f"baseline_cost: SuperFedNAS costs must be > 0, got {sfn}")
    missing = [s for s in dict.fromkeys(target_subnets) if s not in subnet_costs]
    if missing:
        raise ValueError(f"baseline_cost: no FedAvg cost for SubNet(s) {missing}")
    runs = {s: _costs(f"FedAvg cost of SubNet {s!r}", subnet_costs[s], keys) for s in dict.fromkeys(target_subnets)}
    per_target = {k: sum(runs[s][k] for s in target_subnets) for k in keys}
    distinct = {k: sum(run[k] for run in runs.values()) for k in keys}
    return BaselineCost(sfn, per_target, distinct, len(target_subnets), len(runs))


def pool_baseline_costs(costs: Sequence[BaselineCost]) -> BaselineCost:
    """Several runs (e.g. seeds) as one: every total summed, so each ratio is of the summed costs."""
    if not costs:
        raise ValueError("pool_baseline_costs: no runs")
    keys = list(costs[0].superfednas)

    def total(field: str) -> dict[str, float]:
        return {k: sum(getattr(c, field)[k] for c in costs) for k in keys}

    return BaselineCost(total("superfednas"), total("per_target"), total("per_distinct_subnet"),
                        sum(c.num_targets for c in costs), sum(c.num_distinct for c in costs))

"""One-shot specialisation of a federated SuperNet to deployment targets — search only, no retraining.

After SuperFedNAS training, one SuperNet serves every target: for each target (a MAC budget or a
latency budget on some device) ws-core's evolutionary search (``ws_core.search.evolutionary_search``,
OFA's ``EvolutionFinder``) finds the most accurate SubNet whose cost fits, scoring each candidate by
its measured validation accuracy after BN recalibration (as SuperFedNAS's ``nas/run_NAS.py``, which
uses measured accuracy rather than a predictor). Every SubNet scored for one target is a candidate for
every target it fits (``share_candidates``). Costs come from ``ws_core.cost`` (``CostModel`` for
MACs, ``profile_latency`` for latency). Training cost is thus paid once for any number of targets.

Example::

    >>> targets = [DeploymentTarget("mcu", max_macs=1.0e6), DeploymentTarget("phone", max_macs=2.0e6)]
    >>> accuracy = SubNetAccuracy(net, val_loader, bn_loader)                  # doctest: +SKIP
    >>> table = specialise(net, targets, accuracy, test=SubNetAccuracy(net, test_loader, bn_loader))  # doctest: +SKIP
    >>> print(format_table(table))                                             # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ws_core import SubNetConfig, SuperNet
from ws_core.cost import CostModel, profile_latency
from ws_core.search import evolutionary_search

from .task import EvalResult, evaluate_subnet

__all__ = ["CRITERIA", "DeploymentTarget", "Specialisation", "SubNetAccuracy", "fittest_within", "format_table",
           "specialise"]


@dataclass(frozen=True)
class DeploymentTarget:
    """Where a SubNet will run: a name and exactly one budget (MACs per sample, or latency in ms)."""

    name: str
    max_macs: float | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        budgets = [b for b in (self.max_macs, self.max_latency_ms) if b is not None]
        if len(budgets) != 1:
            raise ValueError(f"target {self.name!r}: give exactly one of max_macs or max_latency_ms, "
                             f"got max_macs={self.max_macs!r}, max_latency_ms={self.max_latency_ms!r}")
        b = budgets[0]
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or b <= 0:
            raise ValueError(f"target {self.name!r}: the budget must be a finite number > 0, got {b!r}")

    @property
    def metric(self) -> str:
        return "macs" if self.max_macs is not None else "latency_ms"

    @property
    def budget(self) -> float:
        return float(self.max_macs if self.max_macs is not None else self.max_latency_ms)  # type: ignore[arg-type]

    def describe(self) -> str:
        if self.max_macs is not None:
            return f"MACs <= {self.max_macs / 1e6:.3g}M"
        return f"latency <= {self.max_latency_ms:.3g} ms"


@dataclass(frozen=True)
class Specialisation:
    """The SubNet found for one target, with its costs and accuracies (fractions in [0, 1]).

    ``fitness`` is the search's score of the SubNet; with a :class:`SubNetAccuracy` fitness,
    ``val_accuracy`` and ``val_loss`` are its measured validation accuracy and cross-entropy whatever the
    criterion (with another fitness function, ``val_accuracy`` is that fitness and ``val_loss`` is None).
    """

    target: DeploymentTarget
    subnet: SubNetConfig
    macs: int
    params: int
    cost: float
    val_accuracy: float
    test_accuracy: float | None
    evaluated: int
    val_loss: float | None = None
    fitness: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target.name, "budget": self.target.describe(), "subnet": self.subnet.to_dict(),
                "subnet_id": self.subnet.id, "macs": self.macs, "params": self.params, "cost": self.cost,
                "val_accuracy": self.val_accuracy, "val_loss": self.val_loss, "fitness": self.fitness,
                "test_accuracy": self.test_accuracy, "evaluated": self.evaluated}


CRITERIA = ("accuracy", "loss", "accuracy_then_loss")


class SubNetAccuracy:
    """Validation score of SubNets of a trained SuperNet on one data set, BN-recalibrated per SubNet, cached.

    Works on a private copy of ``net``, so recalibration never touches the caller's SuperNet. Calling it
    returns the search fitness (higher is better) chosen by ``criterion``:

    * ``"accuracy"`` — top-1 accuracy, as SuperFedNAS's ``run_NAS.py``.
    * ``"loss"`` — minus the mean cross-entropy. On a small validation split accuracy saturates: many
      SubNets of very different size score the same (one image is 1/n), so the search cannot tell
      them apart; the loss, a proper scoring rule, still can.
    * ``"accuracy_then_loss"`` — accuracy, with ties broken by lower loss (lexicographic: the loss
      term is below 1/(n + 1) for n examples, less than one image's worth of accuracy).

    :meth:`evaluate` gives the full :class:`~ws_fed.task.EvalResult` (accuracy and loss).

    Args:
        net: the trained SuperNet.
        loader: the evaluation data (e.g. a validation split).
        bn_loader: data for BN recalibration (``None``: use the stored statistics).
        bn_batches: batches used for recalibration.
        criterion: the fitness returned by a call, one of :data:`CRITERIA`.
    """

    def __init__(self, net: SuperNet, loader: Iterable, bn_loader: Iterable | None = None, bn_batches: int = 4,
                 device: torch.device | str | None = None, criterion: str = "accuracy") -> None:
        if criterion not in CRITERIA:
            raise ValueError(f"SubNetAccuracy: criterion must be one of {list(CRITERIA)}, got {criterion!r}")
        self.net = copy.deepcopy(net)
        self.loader, self.bn_loader, self.bn_batches, self.device = loader, bn_loader, bn_batches, device
        self.criterion = criterion
        self.cache: dict[SubNetConfig, EvalResult] = {}

    def evaluate(self, subnet: Mapping[str, Any] | SubNetConfig) -> EvalResult:
        """Accuracy and mean cross-entropy of ``subnet`` (computed once per SubNet)."""
        cfg = self.net.space.validate(subnet)
        result = self.cache.get(cfg)
        if result is None:
            result = self.cache[cfg] = evaluate_subnet(self.net, cfg, self.loader, bn_loader=self.bn_loader,
                                                       bn_batches=self.bn_batches, device=self.device)
        return result

    def __call__(self, subnet: Mapping[str, Any] | SubNetConfig) -> float:
        r = self.evaluate(subnet)
        if self.criterion == "accuracy":
            return r.accuracy
        if self.criterion == "loss":
            return -r.loss
        return r.accuracy + 1.0 / ((r.num_examples + 1) * (1.0 + r.loss))


def specialise(
    net: SuperNet,
    targets: Sequence[DeploymentTarget],
    accuracy: Callable[[SubNetConfig], float],
    *,
    test: Callable[[SubNetConfig], float] | None = None,
    population_size: int = 16,
    generations: int = 4,
    parent_ratio: float = 0.25,
    mutation_ratio: float = 0.2,
    mutate_prob: float = 0.1,
    seed: int = 0,
    latency_batch_size: int = 1,
    latency_repeats: int = 10,
    device: torch.device | str | None = None,
    share_candidates: bool = True,
) -> list[Specialisation]:
    """Find the fittest (e.g. most accurate) SubNet within each target's budget (no retraining).

    Args:
        net: the trained SuperNet.
        targets: the deployment targets.
        accuracy: fitness of a SubNet, higher is better (e.g. :class:`SubNetAccuracy` on a validation
            split, whose ``criterion`` picks accuracy or loss); called once per distinct SubNet
            across all targets.
        test: optional held-out accuracy, reported for the chosen SubNets only.
        population_size / generations / parent_ratio / mutation_ratio / mutate_prob: the evolutionary
            search (``ws_core.search.evolutionary_search``). The defaults are SuperFedNAS's
            ``nas/run_NAS.py``: parent ratio 0.25, mutation ratio 0.2 (a fifth of the children by
            mutation, the rest by crossover; OFA's default is 0.5) and mutation probability 0.1.
        seed: seeds each target's search.
        latency_batch_size / latency_repeats / device: how latency budgets are measured
            (``ws_core.cost.profile_latency`` on ``device``, median of the repeats).
        share_candidates: after every target's search, each target gets the fittest SubNet within its
            budget among *all* SubNets scored by any target's search (ties to the lower cost, then to
            the first scored), so a looser budget never ends with a less fit SubNet than a tighter one
            and no score is wasted. ``False``: each target keeps its own search's winner (OFA's
            independent searches).

    Returns:
        One :class:`Specialisation` per target, in order.

    Raises:
        ValueError: if a budget is below the cheapest SubNet (the message names the target).
    """
    if not targets:
        raise ValueError("specialise: give at least one DeploymentTarget")
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"specialise: target names must be distinct, got {names}")
    costs = CostModel(net)
    latency_net = copy.deepcopy(net) if any(t.max_latency_ms is not None for t in targets) else None
    latencies: dict[SubNetConfig, float] = {}

    def latency(cfg: SubNetConfig) -> float:
        ms = latencies.get(cfg)
        if ms is None:
            table = profile_latency(latency_net, [cfg], batch_sizes=(latency_batch_size,), warmup=2,
                                    repeats=latency_repeats, device=device)
            ms = latencies[cfg] = table.entries[0].median_ms
        return ms

    scored: dict[SubNetConfig, float] = {}  # every SubNet scored by any target's search, in order

    def fitness(cfg: SubNetConfig) -> float:
        f = scored.get(cfg)
        if f is None:
            f = scored[cfg] = float(accuracy(cfg))
        return f

    def cost_fn_of(target: DeploymentTarget) -> Callable[[SubNetConfig], float]:
        return costs.macs if target.metric == "macs" else latency

    searches = []
    smallest = net.space.min()
    for i, target in enumerate(targets):
        cost_fn = cost_fn_of(target)
        if cost_fn(smallest) > target.budget:
            raise ValueError(f"target {target.name!r} ({target.describe()}): even the smallest SubNet costs "
                             f"{cost_fn(smallest):g}")
        try:
            found = evolutionary_search(
                net.space, fitness=fitness, cost=cost_fn, constraint=target.budget,
                population_size=population_size, generations=generations, parent_ratio=parent_ratio,
                mutation_ratio=mutation_ratio, mutate_prob=mutate_prob,
                generator=torch.Generator().manual_seed(seed * 7919 + i), max_sample_tries=2000,
            )
        except ValueError as e:
            raise ValueError(f"target {target.name!r} ({target.describe()}): {e}") from None
        searches.append(found)

    out = []
    for target, found in zip(targets, searches):
        best = found.best
        if share_candidates:
            best = fittest_within(scored, cost_fn_of(target), target.budget)
        measured = accuracy.evaluate(best) if isinstance(accuracy, SubNetAccuracy) else None
        out.append(Specialisation(
            target=target, subnet=best, macs=int(costs.macs(best)), params=int(costs.params(best)),
            cost=float(cost_fn_of(target)(best)),
            val_accuracy=float(scored[best] if measured is None else measured.accuracy),
            test_accuracy=None if test is None else float(test(best)), evaluated=found.evaluated,
            val_loss=None if measured is None else float(measured.loss), fitness=scored[best],
        ))
    return out


def fittest_within(scored: Mapping[SubNetConfig, float], cost: Callable[[SubNetConfig], float],
                   budget: float) -> SubNetConfig:
    """The SubNet of highest score among ``scored`` whose ``cost`` is within ``budget``.

    Ties go to the lower cost, then to the one scored first (``scored``'s order). Costs are asked for
    in order of decreasing score and only until the fittest feasible score is known, so a measured cost
    (latency) is not measured for every candidate.

    Raises:
        ValueError: if no scored SubNet fits the budget.
    """
    best, best_cost, best_score = None, math.inf, -math.inf
    for cfg, score in sorted(scored.items(), key=lambda kv: -kv[1]):  # stable: ties keep scored order
        if best is not None and score < best_score:
            break
        c = cost(cfg)
        if c <= budget and c < best_cost:
            best, best_cost, best_score = cfg, c, score
    if best is None:
        raise ValueError(f"none of the {len(scored)} scored SubNets fits the budget {budget:g}")
    return best


def format_table(results: Sequence[Specialisation]) -> str:
    """Markdown table target → SubNet → accuracy."""
    lines = ["| target | budget | SubNet | depth | MMACs | params (k) | val acc % | val loss | test acc % |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        test = "–" if r.test_accuracy is None else f"{100 * r.test_accuracy:.2f}"
        loss = "–" if r.val_loss is None else f"{r.val_loss:.4f}"
        depth = r.subnet.get("depth")
        lines.append(f"| {r.target.name} | {r.target.describe()} | {r.subnet.id} | "
                     f"{list(depth) if depth is not None else '–'} | {r.macs / 1e6:.3f} | {r.params / 1e3:.1f} | "
                     f"{100 * r.val_accuracy:.2f} | {loss} | {test} |")
    return "\n".join(lines)

"""Search over a :class:`~ws_core.space.SearchSpace`: Pareto fronts, accuracy predictors, evolution.

The pieces follow Once-for-All (Cai et al., 2020), ``ofa/nas``:

* :func:`pareto_front` — the non-dominated (cost, score) points, e.g. MACs vs. accuracy;
* :class:`AccuracyPredictor` — an MLP on :meth:`SearchSpace.encode` that predicts a SubNet's accuracy
  (``ofa/nas/accuracy_predictor``);
* :func:`evolutionary_search` — OFA's ``EvolutionFinder``: a constrained genetic search with elitism,
  mutation and crossover (``ofa/nas/search_algorithm``);
* :func:`random_search` — the random-sampling baseline under the same constraint;
* :func:`pareto_search` — unconstrained multi-objective exploration: random SubNets, then mutations of
  the (cost, score) Pareto front found so far, to fill the front between the min and the max SubNet;
* the predictor workflow: :func:`build_accuracy_dataset` measures the min, the max and random SubNets
  (OFA's ``AccuracyDataset``), :meth:`AccuracyPredictor.fit` learns from them, the fitted predictor is the
  fitness of :func:`evolutionary_search` (:func:`predictor_search` proposes the predicted best SubNet
  under a spread of cost budgets), and :func:`predictor_quality` gives its RMSE and Spearman rank
  correlation on SubNets it was not fitted on.

All randomness is drawn from an optional :class:`torch.Generator`, so a seeded generator gives the
same result on every run.

Example::

    >>> from ws_core.space import Dimension, SearchSpace
    >>> space = SearchSpace(
    ...     [Dimension("depth", (1, 2), "stage"), Dimension("width", (1, 2, 3), "block")],
    ...     stage_blocks=(2, 2),
    ... )
    >>> def widths(cfg):
    ...     return [w for w in cfg["width"] if w is not None]
    >>> result = evolutionary_search(
    ...     space, fitness=lambda c: sum(widths(c)), cost=lambda c: len(widths(c)), constraint=3,
    ...     population_size=10, generations=10, generator=torch.Generator().manual_seed(0),
    ... )
    >>> result.best_fitness, result.best_cost
    (9.0, 3.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from .config import SubNetConfig
from .space import SearchSpace

__all__ = [
    "AccuracyDataset",
    "AccuracyPredictor",
    "ParetoPoint",
    "PredictorQuality",
    "SearchResult",
    "build_accuracy_dataset",
    "evolutionary_search",
    "pareto_front",
    "pareto_search",
    "predictor_quality",
    "predictor_search",
    "random_search",
    "spearman",
]


# Pareto front -----------------------------------------------------------------------------------
def _as_floats(values: Any, name: str) -> list[float]:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().reshape(-1).tolist()
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of real numbers: {exc}") from None
    for i, v in enumerate(out):
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite; {name}[{i}] is {v}")
    return out


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points, lower cost and higher score being better.

    Point ``i`` is dominated when some point ``j`` has ``costs[j] <= costs[i]`` and
    ``scores[j] >= scores[i]`` with at least one inequality strict. Of several exact duplicates
    (same cost and score) only the first index is kept.

    Args:
        costs: one cost per point (e.g. MACs or latency); lists, NumPy arrays and tensors work.
        scores: one score per point (e.g. accuracy).

    Returns:
        The front's indices, sorted by cost ascending; along the front a higher cost always buys a
        strictly higher score.

    Raises:
        ValueError: if the lengths differ or a value is not a finite number.

    Example::

        >>> pareto_front([1.0, 2.0, 2.0, 3.0], [0.5, 0.7, 0.6, 0.7])
        [0, 1]
    """
    c = _as_floats(costs, "costs")
    s = _as_floats(scores, "scores")
    if len(c) != len(s):
        raise ValueError(f"costs has {len(c)} entries, scores has {len(s)}")
    order = sorted(range(len(c)), key=lambda i: (c[i], -s[i], i))
    front: list[int] = []
    best_score = -math.inf
    for i in order:
        # Every earlier point in ``order`` costs no more; ``i`` survives only if it scores strictly better.
        if s[i] > best_score:
            front.append(i)
            best_score = s[i]
    return front


# Accuracy predictor -----------------------------------------------------------------------------
class AccuracyPredictor(nn.Module):
    """MLP accuracy predictor on a SubNet's one-hot encoding (OFA ``AccuracyPredictor``).

    ``n_layers`` hidden ``Linear + ReLU`` layers of width ``hidden_size``, a bias-free ``Linear`` to
    one output, plus a learned scalar ``base_acc`` (the mean accuracy, set by :meth:`fit`). Unlike
    OFA, whose ``base_acc`` is frozen, here it is trained along with the MLP.

    Args:
        space: the search space whose :meth:`~ws_core.space.SearchSpace.encode` feeds the MLP.
        hidden_size: width of the hidden layers (OFA: 400).
        n_layers: number of hidden layers (OFA: 3).
        base_acc: initial value of the ``base_acc`` offset.

    Example::

        >>> predictor = AccuracyPredictor(space)                       # doctest: +SKIP
        >>> losses = predictor.fit(configs, accuracies)                 # doctest: +SKIP
        >>> predictor.predict([space.max(), space.min()])               # doctest: +SKIP
        tensor([0.7712, 0.6903])
    """

    def __init__(self, space: SearchSpace, hidden_size: int = 400, n_layers: int = 3, base_acc: float = 0.0):
        super().__init__()
        if not isinstance(space, SearchSpace):
            raise TypeError(f"AccuracyPredictor: space must be a SearchSpace, got {type(space).__name__}")
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
            raise ValueError(f"AccuracyPredictor: hidden_size must be a positive int, got {hidden_size!r}")
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"AccuracyPredictor: n_layers must be an int >= 1, got {n_layers!r}")
        if not math.isfinite(float(base_acc)):
            raise ValueError(f"AccuracyPredictor: base_acc must be finite, got {base_acc!r}")
        self.space = space
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        layers: list[nn.Module] = []
        in_features = space.encoding_length
        for _ in range(n_layers):
            layers += [nn.Linear(in_features, hidden_size), nn.ReLU(inplace=True)]
            in_features = hidden_size
        layers.append(nn.Linear(hidden_size, 1, bias=False))
        self.layers = nn.Sequential(*layers)
        self.base_acc = nn.Parameter(torch.tensor(float(base_acc)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted accuracies ``[B]`` for encodings ``x`` of shape ``[B, space.encoding_length]``."""
        if x.dim() != 2 or x.shape[1] != self.space.encoding_length:
            raise ValueError(
                f"AccuracyPredictor: expected input of shape [B, {self.space.encoding_length}], "
                f"got {list(x.shape)}"
            )
        return self.layers(x).squeeze(-1) + self.base_acc

    def _encode(self, configs: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        device = self.base_acc.device
        if len(configs) == 0:
            return torch.zeros(0, self.space.encoding_length, device=device)
        return torch.stack([self.space.encode(c) for c in configs]).to(device)

    @torch.no_grad()
    def predict(self, configs: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """Predicted accuracies ``[B]`` of ``configs`` (no gradients; on the predictor's device).

        Raises:
            ValueError: if a config is not valid in ``space``.
        """
        if isinstance(configs, Mapping):
            raise TypeError("AccuracyPredictor.predict: expected a sequence of configs, got a single config")
        return self(self._encode(list(configs)))

    def fit(
        self,
        configs: Sequence[Mapping[str, Any]],
        accuracies: Sequence[float],
        epochs: int = 100,
        lr: float = 1e-3,
        batch_size: int = 256,
        weight_decay: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> list[float]:
        """Train on ``(config, accuracy)`` pairs with Adam and an MSE loss.

        ``base_acc`` is first set to the mean accuracy, so the MLP learns the residual. Batches are
        shuffled each epoch with ``generator`` (the weights' initialisation uses torch's global RNG;
        seed it with :func:`torch.manual_seed` for fully reproducible fits).

        Args:
            configs: SubNet configs valid in ``space``.
            accuracies: their measured accuracies, same length.
            epochs: passes over the data (>= 0).
            lr: Adam learning rate (> 0).
            batch_size: samples per step (>= 1).
            weight_decay: Adam weight decay (>= 0).
            generator: source of the shuffling randomness.

        Returns:
            The mean training MSE of each epoch.

        Raises:
            ValueError: on empty or mismatched inputs, invalid configs or bad hyper-parameters.
        """
        if isinstance(configs, Mapping):
            raise TypeError("AccuracyPredictor.fit: expected a sequence of configs, got a single config")
        configs = list(configs)
        targets = _as_floats(accuracies, "accuracies")
        if len(configs) != len(targets):
            raise ValueError(
                f"AccuracyPredictor.fit: configs and accuracies must have the same length, "
                f"got {len(configs)} configs and {len(targets)} accuracies"
            )
        if not configs:
            raise ValueError("AccuracyPredictor.fit: needs at least one (config, accuracy) pair, got none")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"AccuracyPredictor.fit: epochs must be an int >= 0, got {epochs!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"AccuracyPredictor.fit: batch_size must be an int >= 1, got {batch_size!r}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"AccuracyPredictor.fit: lr must be a finite number > 0, got {lr!r}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(
                f"AccuracyPredictor.fit: weight_decay must be a finite number >= 0, got {weight_decay!r}"
            )

        x = self._encode(configs)
        y = torch.tensor(targets, dtype=x.dtype, device=x.device)
        with torch.no_grad():
            self.base_acc.fill_(y.mean().item())
        optimizer = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)
        was_training = self.training
        self.train()
        losses: list[float] = []
        n = len(configs)
        try:
            for _ in range(epochs):
                perm = torch.randperm(n, generator=generator).to(x.device)
                total = 0.0
                for start in range(0, n, batch_size):
                    idx = perm[start : start + batch_size]
                    loss = nn.functional.mse_loss(self(x[idx]), y[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += loss.item() * len(idx)
                losses.append(total / n)
        finally:
            self.train(was_training)
        return losses


# Evolutionary search ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchResult:
    """Outcome of :func:`evolutionary_search` or :func:`random_search`.

    Attributes:
        best: the fittest feasible SubNet found (ties go to the lower cost, then to the first found).
        best_fitness: its fitness.
        best_cost: its cost (``<= constraint``).
        history: best fitness so far, after the initial population and then after each generation
            (evolution: ``generations + 1`` entries) or after each sample (random search); non-decreasing.
        evaluated: number of distinct SubNets whose fitness was computed.
    """

    best: SubNetConfig
    best_fitness: float
    best_cost: float
    history: list[float] = field(default_factory=list)
    evaluated: int = 0


class _Evaluator:
    """Caches ``cost`` and ``fitness`` per config and tracks the best feasible one seen."""

    def __init__(
        self,
        fitness: Callable[[SubNetConfig], float],
        cost: Callable[[SubNetConfig], float],
        constraint: float,
    ):
        self._fitness_fn = fitness
        self._cost_fn = cost
        self.constraint = constraint
        self.costs: dict[SubNetConfig, float] = {}
        self.fitnesses: dict[SubNetConfig, float] = {}
        self.best: SubNetConfig | None = None

    def cost(self, cfg: SubNetConfig) -> float:
        c = self.costs.get(cfg)
        if c is None:
            c = float(self._cost_fn(cfg))
            if math.isnan(c):
                raise ValueError(f"cost returned NaN for {cfg!r}")
            self.costs[cfg] = c
        return c

    def feasible(self, cfg: SubNetConfig) -> bool:
        return self.cost(cfg) <= self.constraint

    def fitness(self, cfg: SubNetConfig) -> float:
        f = self.fitnesses.get(cfg)
        if f is None:
            f = float(self._fitness_fn(cfg))
            if math.isnan(f):
                raise ValueError(f"fitness returned NaN for {cfg!r}")
            self.fitnesses[cfg] = f
            if self.best is None or self.rank_key(cfg) < self.rank_key(self.best):
                self.best = cfg
        return f

    def rank_key(self, cfg: SubNetConfig) -> tuple[float, float]:
        """Sort key: higher fitness first, then lower cost."""
        return (-self.fitness(cfg), self.cost(cfg))

    def result(self, history: list[float]) -> SearchResult:
        assert self.best is not None
        return SearchResult(
            best=self.best,
            best_fitness=self.fitnesses[self.best],
            best_cost=self.costs[self.best],
            history=history,
            evaluated=len(self.fitnesses),
        )


def _randint(n: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(n, (1,), generator=generator).item())


def _check_common(space: SearchSpace, constraint: float, max_sample_tries: int) -> float:
    if not isinstance(space, SearchSpace):
        raise TypeError(f"space must be a SearchSpace, got {type(space).__name__}")
    try:
        constraint = float(constraint)
    except (TypeError, ValueError):
        raise ValueError(f"constraint must be a finite number, got {constraint!r}") from None
    if not math.isfinite(constraint):
        raise ValueError(f"constraint must be a finite number, got {constraint!r}")
    if isinstance(max_sample_tries, bool) or not isinstance(max_sample_tries, int) or max_sample_tries < 1:
        raise ValueError(f"max_sample_tries must be an int >= 1, got {max_sample_tries!r}")
    return constraint


def _feasible_sample(
    space: SearchSpace, ev: _Evaluator, generator: torch.Generator | None, max_sample_tries: int
) -> SubNetConfig:
    """Rejection-sample ``space.sample`` until a SubNet meets the constraint."""
    for _ in range(max_sample_tries):
        cfg = space.sample(generator)
        if ev.feasible(cfg):
            return cfg
    smallest = ev.cost(space.min())
    raise ValueError(
        f"no SubNet with cost <= {ev.constraint:g} found in {max_sample_tries} samples; "
        f"the smallest SubNet costs {smallest:g}"
    )


def _feasible_child(
    make: Callable[[], SubNetConfig], fallback: SubNetConfig, ev: _Evaluator, max_sample_tries: int
) -> SubNetConfig:
    """Rejection-sample ``make()`` until feasible; after ``max_sample_tries`` failures return ``fallback``."""
    for _ in range(max_sample_tries):
        cfg = make()
        if ev.feasible(cfg):
            return cfg
    return fallback


def evolutionary_search(
    space: SearchSpace,
    fitness: Callable[[SubNetConfig], float],
    cost: Callable[[SubNetConfig], float],
    constraint: float,
    *,
    population_size: int = 100,
    generations: int = 500,
    parent_ratio: float = 0.25,
    mutation_ratio: float = 0.5,
    mutate_prob: float = 0.1,
    generator: torch.Generator | None = None,
    max_sample_tries: int = 10_000,
) -> SearchResult:
    """Constrained evolutionary search (OFA ``EvolutionFinder``; defaults are OFA's).

    A SubNet is feasible iff ``cost(cfg) <= constraint``. The initial population holds
    ``population_size`` feasible SubNets, rejection-sampled from :meth:`SearchSpace.sample`. Each
    generation keeps the ``round(parent_ratio * population_size)`` fittest distinct SubNets as parents
    (elitism) and fills the population back up with children: a ``mutation_ratio`` share are
    :meth:`SearchSpace.mutate` of a random parent, the rest :meth:`SearchSpace.crossover` of two
    random parents; each child is resampled until feasible (after ``max_sample_tries`` failures the
    parent itself is used). Fitness and cost are cached per config, so no SubNet is evaluated twice,
    and fitness is only computed for feasible SubNets.

    Unlike OFA, whose population grows to ``parents + population_size`` after the first generation,
    the population here stays at ``population_size``.

    Args:
        space: the search space.
        fitness: higher is better, e.g. ``lambda c: predictor.predict([c]).item()``.
        cost: e.g. MACs or latency of a SubNet.
        constraint: the largest allowed cost (finite).
        population_size: SubNets per generation (>= 2).
        generations: number of generations (>= 0; 0 returns the best of the initial population).
        parent_ratio: share of the population kept as parents, in ``(0, 1]``.
        mutation_ratio: share of the children made by mutation, in ``[0, 1]``.
        mutate_prob: per-position resampling probability of a mutation, in ``[0, 1]``.
        generator: source of all randomness; a seeded generator makes the search reproducible.
        max_sample_tries: consecutive infeasible samples allowed before giving up (>= 1).

    Returns:
        A :class:`SearchResult`; ``history`` has ``generations + 1`` entries.

    Raises:
        ValueError: on bad arguments, or if no feasible SubNet is found in ``max_sample_tries``
            consecutive samples (the message gives the constraint and the cost of ``space.min()``).
    """
    constraint = _check_common(space, constraint, max_sample_tries)
    if isinstance(population_size, bool) or not isinstance(population_size, int) or population_size < 2:
        raise ValueError(f"population_size must be an int >= 2, got {population_size!r}")
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 0:
        raise ValueError(f"generations must be an int >= 0, got {generations!r}")
    if not 0.0 < parent_ratio <= 1.0:
        raise ValueError(f"parent_ratio must be in (0, 1], got {parent_ratio!r}")
    if not 0.0 <= mutation_ratio <= 1.0:
        raise ValueError(f"mutation_ratio must be in [0, 1], got {mutation_ratio!r}")
    if not 0.0 <= mutate_prob <= 1.0:
        raise ValueError(f"mutate_prob must be in [0, 1], got {mutate_prob!r}")

    ev = _Evaluator(fitness, cost, constraint)
    n_parents = max(1, round(parent_ratio * population_size))

    population = [_feasible_sample(space, ev, generator, max_sample_tries) for _ in range(population_size)]
    for cfg in population:
        ev.fitness(cfg)
    history = [ev.fitnesses[ev.best]]

    for _ in range(generations):
        distinct = list(dict.fromkeys(population))
        parents = sorted(distinct, key=ev.rank_key)[:n_parents]  # stable: ties keep population order
        n_children = population_size - len(parents)
        n_mutate = round(mutation_ratio * n_children)
        children: list[SubNetConfig] = []
        for _ in range(n_mutate):
            p = parents[_randint(len(parents), generator)]
            child = _feasible_child(
                lambda p=p: space.mutate(p, mutate_prob, generator), p, ev, max_sample_tries
            )
            children.append(child)
        for _ in range(n_children - n_mutate):
            a = parents[_randint(len(parents), generator)]
            b = parents[_randint(len(parents), generator)]
            child = _feasible_child(
                lambda a=a, b=b: space.crossover(a, b, generator), a, ev, max_sample_tries
            )
            children.append(child)
        for cfg in children:
            ev.fitness(cfg)
        population = parents + children
        history.append(ev.fitnesses[ev.best])

    return ev.result(history)


def random_search(
    space: SearchSpace,
    fitness: Callable[[SubNetConfig], float],
    cost: Callable[[SubNetConfig], float],
    constraint: float,
    n: int = 1000,
    generator: torch.Generator | None = None,
    *,
    max_sample_tries: int = 10_000,
) -> SearchResult:
    """Random-search baseline: the fittest of ``n`` feasible SubNets drawn from :meth:`SearchSpace.sample`.

    Args:
        space: the search space.
        fitness: higher is better.
        cost: cost of a SubNet; feasible iff ``cost(cfg) <= constraint``.
        constraint: the largest allowed cost (finite).
        n: number of feasible samples (>= 1; duplicates are drawn but scored once).
        generator: source of all randomness.
        max_sample_tries: consecutive infeasible samples allowed before giving up (>= 1).

    Returns:
        A :class:`SearchResult`; ``history`` has ``n`` entries (best fitness after each sample).

    Raises:
        ValueError: on bad arguments, or if no feasible SubNet is found in ``max_sample_tries``
            consecutive samples.
    """
    constraint = _check_common(space, constraint, max_sample_tries)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    ev = _Evaluator(fitness, cost, constraint)
    history: list[float] = []
    for _ in range(n):
        ev.fitness(_feasible_sample(space, ev, generator, max_sample_tries))
        history.append(ev.fitnesses[ev.best])
    return ev.result(history)


# Pareto exploration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParetoPoint:
    """One SubNet scored by :func:`pareto_search`: how it was chosen (``"min"``, ``"max"``, ``"random"``,
    ``"mutation"``), its score and cost, and whether it is on the final Pareto front."""

    config: SubNetConfig
    label: str
    score: float
    cost: float
    pareto: bool = False


def pareto_search(
    space: SearchSpace,
    score: Callable[[SubNetConfig], float],
    cost: Callable[[SubNetConfig], float],
    candidates: int,
    *,
    random_fraction: float = 1 / 3,
    mutate_prob: float = 0.2,
    generator: torch.Generator | None = None,
    on_scored: Callable[[ParetoPoint, int], None] | None = None,
    max_draws: int = 100,
) -> list[ParetoPoint]:
    """Score the min, the max and ``candidates`` more SubNets chosen to fill the (cost, score) Pareto front.

    The first ``round(candidates * random_fraction)`` candidates are uniform samples
    (:meth:`SearchSpace.sample`); each later one is :meth:`SearchSpace.mutate` (per-position probability
    ``mutate_prob``) of a parent drawn uniformly from the Pareto front of the SubNets scored so far — a
    small multi-objective evolutionary search with no constraint. No SubNet is scored twice; a draw is
    retried up to ``max_draws`` times to find an unscored SubNet (a tiny space may run out: then fewer
    are scored). ``on_scored(point, index)`` is called after each score (progress reports).

    Returns:
        The scored SubNets in the order they were scored, ``pareto`` set on the final front.
    """
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 0:
        raise ValueError(f"candidates must be an int >= 0, got {candidates!r}")
    if not 0.0 <= random_fraction <= 1.0:
        raise ValueError(f"random_fraction must be in [0, 1], got {random_fraction!r}")
    if not 0.0 <= mutate_prob <= 1.0:
        raise ValueError(f"mutate_prob must be in [0, 1], got {mutate_prob!r}")
    points: list[ParetoPoint] = []
    seen: set[SubNetConfig] = set()
    n_random = round(candidates * random_fraction)

    def add(cfg: SubNetConfig, label: str) -> None:
        seen.add(cfg)
        point = ParetoPoint(cfg, label, float(score(cfg)), float(cost(cfg)))
        if not (math.isfinite(point.score) and math.isfinite(point.cost)):
            raise ValueError(f"score and cost must be finite, got {point.score} and {point.cost} for {cfg!r}")
        points.append(point)
        if on_scored is not None:
            on_scored(point, len(points) - 1)

    def draw(i: int) -> tuple[SubNetConfig | None, str]:
        for _ in range(max_draws):
            if i < n_random:
                cfg, label = space.sample(generator), "random"
            else:
                front = pareto_front([p.cost for p in points], [p.score for p in points])
                parent = points[front[_randint(len(front), generator)]]
                cfg, label = space.mutate(parent.config, mutate_prob, generator), "mutation"
            if cfg not in seen:
                return cfg, label
        return None, ""

    for cfg, label in ((space.min(), "min"), (space.max(), "max")):
        if cfg not in seen:
            add(cfg, label)
    for i in range(candidates):
        cfg, label = draw(i)
        if cfg is not None:
            add(cfg, label)
    front = set(pareto_front([p.cost for p in points], [p.score for p in points]))
    return [ParetoPoint(p.config, p.label, p.score, p.cost, i in front) for i, p in enumerate(points)]


# Accuracy predictor workflow ---------------------------------------------------------------------
class AccuracyDataset(NamedTuple):
    """Measured ``(config, accuracy)`` pairs to fit an :class:`AccuracyPredictor` on
    (``predictor.fit(*dataset)``); built by :func:`build_accuracy_dataset`."""

    configs: list[SubNetConfig]
    accuracies: list[float]


def build_accuracy_dataset(
    space: SearchSpace,
    evaluate: Callable[[SubNetConfig], float],
    n: int,
    generator: torch.Generator | None = None,
    *,
    on_scored: Callable[[ParetoPoint, int], None] | None = None,
) -> AccuracyDataset:
    """Measure ``n`` distinct SubNets of ``space`` — the min, the max and ``n - 2`` uniform samples
    (OFA's ``AccuracyDataset.build_acc_dataset``) — with ``evaluate``.

    ``evaluate(config) -> accuracy`` does the measuring, e.g. on a SuperNet ``net`` (whose space is
    ``net.space``): :func:`ws_core.bn.recalibrate_bn` on training batches, then the accuracy on a
    split the predictor will not be judged on. The sampling is :func:`pareto_search` with only random
    candidates; a tiny space may run out of distinct SubNets (then fewer are returned).

    Args:
        space: the search space (``net.space``).
        evaluate: a SubNet's measured accuracy (finite).
        n: number of SubNets (>= 2: the min and the max are always included).
        generator: source of the sampling randomness; seed it for a reproducible data set.
        on_scored: called as ``on_scored(point, index)`` after each measurement (progress reports).

    Returns:
        An :class:`AccuracyDataset`: configs (min, max, then the samples) and their accuracies.

    Example::

        >>> def evaluate(cfg):                                                 # doctest: +SKIP
        ...     recalibrate_bn(net, train_batches, cfg)
        ...     with net.subnet(cfg):
        ...         return accuracy(net, val_batches)
        >>> data = build_accuracy_dataset(net.space, evaluate, 100, torch.Generator().manual_seed(0))  # doctest: +SKIP
        >>> AccuracyPredictor(net.space).fit(*data)                           # doctest: +SKIP
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"build_accuracy_dataset: n must be an int >= 2 (the min and the max), got {n!r}")
    points = pareto_search(space, evaluate, lambda cfg: 0.0, n - 2, random_fraction=1.0, generator=generator,
                           on_scored=on_scored)
    return AccuracyDataset([p.config for p in points], [p.score for p in points])


@dataclass(frozen=True)
class PredictorQuality:
    """How well predicted accuracies match measured ones on ``n`` SubNets: the root-mean-square error
    (in the accuracies' unit) and Spearman's rank correlation (``nan`` with fewer than two SubNets or
    when either side is constant)."""

    rmse: float
    spearman: float
    n: int


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (ties get their mean rank);
    ``nan`` with fewer than two points or when either side is constant.

    Example::

        >>> spearman([1, 2, 3, 4], [10, 30, 20, 40])
        0.8
    """
    a, b = _as_floats(x, "x"), _as_floats(y, "y")
    if len(a) != len(b):
        raise ValueError(f"spearman: x has {len(a)} entries, y has {len(b)}")
    if len(a) < 2:
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((p - ma) * (q - mb) for p, q in zip(ra, rb, strict=True))
    var_a, var_b = sum((p - ma) ** 2 for p in ra), sum((q - mb) ** 2 for q in rb)
    if var_a == 0 or var_b == 0:
        return math.nan
    return cov / math.sqrt(var_a * var_b)


def predictor_quality(predicted: Sequence[float], measured: Sequence[float]) -> PredictorQuality:
    """RMSE and Spearman rank correlation of ``predicted`` against ``measured`` accuracies.

    Judge a predictor on SubNets it was not fitted on: the SubNets :func:`predictor_search` proposed,
    or a held-back part of an :class:`AccuracyDataset`.

    Example::

        >>> q = predictor_quality([0.5, 0.7, 0.6], [0.5, 0.6, 0.7])
        >>> round(q.rmse, 4), q.spearman, q.n
        (0.0816, 0.5, 3)
    """
    p, m = _as_floats(predicted, "predicted"), _as_floats(measured, "measured")
    if len(p) != len(m):
        raise ValueError(f"predictor_quality: predicted has {len(p)} entries, measured has {len(m)}")
    rmse = math.sqrt(sum((a - b) ** 2 for a, b in zip(p, m, strict=True)) / len(p)) if p else math.nan
    return PredictorQuality(rmse, spearman(p, m), len(p))


def predictor_search(
    predictor: AccuracyPredictor,
    cost: Callable[[SubNetConfig], float],
    n: int,
    *,
    exclude: Iterable[Mapping[str, Any]] = (),
    population_size: int = 16,
    generations: int = 10,
    generator: torch.Generator | None = None,
) -> list[ParetoPoint]:
    """Propose up to ``n`` new SubNets spread over the cost range, each the best the predictor sees
    under a budget: :func:`evolutionary_search` with the predicted accuracy as fitness.

    The budgets are spaced geometrically from the cost of ``space.min()`` to that of ``space.max()``
    (``lo * (hi / lo) ** (k / n)``, ``k = 1..n``; evenly when ``lo <= 0``), so each proposal fills one
    band of the front. SubNets in ``exclude`` (those already measured) and earlier proposals have
    fitness ``-inf``, so every proposal is new; a budget under which nothing new is found gives none.
    Costs are cached across the budgets.

    Args:
        predictor: a fitted :class:`AccuracyPredictor`; its ``space`` is searched.
        cost: e.g. MACs of a SubNet.
        n: number of budgets (>= 0).
        exclude: SubNets never to propose.
        population_size, generations: of each :func:`evolutionary_search`.
        generator: source of all randomness.

    Returns:
        The proposals, by budget ascending, as :class:`ParetoPoint` with label ``"predicted"`` and the
        *predicted* accuracy as ``score``; measure them, then compare with :func:`predictor_quality`.

    Example::

        >>> proposals = predictor_search(predictor, macs, 4, exclude=data.configs)   # doctest: +SKIP
    """
    if not isinstance(predictor, AccuracyPredictor):
        raise TypeError(f"predictor_search: predictor must be an AccuracyPredictor, got {type(predictor).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"predictor_search: n must be an int >= 0, got {n!r}")
    space = predictor.space
    taken = {space.validate(c) for c in exclude}
    costs: dict[SubNetConfig, float] = {}

    def cached_cost(cfg: SubNetConfig) -> float:
        if cfg not in costs:
            costs[cfg] = float(cost(cfg))
        return costs[cfg]

    def fitness(cfg: SubNetConfig) -> float:
        return -math.inf if cfg in taken else float(predictor.predict([cfg]).item())

    lo, hi = cached_cost(space.min()), cached_cost(space.max())
    proposals: list[ParetoPoint] = []
    for k in range(1, n + 1):
        budget = lo * (hi / lo) ** (k / n) if lo > 0 else lo + (hi - lo) * k / n
        found = evolutionary_search(space, fitness, cached_cost, budget, population_size=population_size,
                                    generations=generations, generator=generator)
        if found.best_fitness == -math.inf:
            continue
        taken.add(found.best)
        proposals.append(ParetoPoint(found.best, "predicted", found.best_fitness, found.best_cost))
    return proposals

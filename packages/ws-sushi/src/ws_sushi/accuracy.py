"""Accuracy per SubNet: the table SushiSched chooses from.

SushiSched needs, for every candidate SubNet, one accuracy number. Where it comes from is the
caller's choice, recorded in the table's ``source``:

* ``"measured"`` — accuracies measured on a validation set (e.g. after BN recalibration, ws-train);
* ``"predictor"`` — predictions of a fitted :class:`ws_core.search.AccuracyPredictor`
  (:meth:`AccuracyTable.from_predictor`);
* ``"proxy"`` — a stand-in when neither exists (an untrained SuperNet): accuracy interpolated
  log-linearly in MACs between two given end points (:meth:`AccuracyTable.log_macs_proxy`). A proxy
  only orders SubNets by capacity; served accuracies computed from it are in proxy units.

Every number derived from a table carries its :attr:`AccuracyTable.label` wherever ws-sushi prints or
reports it (``format_summary``, ``SimulationResult.summary()["accuracy_label"]``, the table's JSON):
``"measured"``, ``"predicted"`` or ``"proxy (log-linear in MACs)"`` — a proxy's "+1 point" is a
difference of interpolated MACs, not of accuracy.

The table is a mapping ``SubNet id → accuracy``; its configs are the scheduler's candidate SubNets.
It round-trips through JSON::

    {"metric": "top1", "source": "measured",
     "entries": [{"id": "3f2a...", "config": {...}, "accuracy": 0.771}, ...]}

Example::

    >>> table = AccuracyTable.from_pairs([net.space.min(), net.space.max()], [0.70, 0.77])
    >>> table.accuracy(net.space.max())
    0.77
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ws_core import CostModel, SearchSpace, SubNetConfig
from ws_core.io import atomic_write_text

__all__ = ["ACCURACY_LABELS", "PROXY_LABEL", "AccuracyTable", "uniform_subnets"]

_SOURCES = ("measured", "predictor", "proxy")
#: How accuracies of each source are labelled in printed and reported results.
PROXY_LABEL = "proxy (log-linear in MACs)"
ACCURACY_LABELS = {"measured": "measured", "predictor": "predicted", "proxy": PROXY_LABEL}


class AccuracyTable(Mapping):
    """Accuracy of each candidate SubNet (``SubNet id → accuracy``), with the configs themselves.

    Args:
        configs: the SubNets (``SubNetConfig`` or dicts).
        accuracies: one finite number per SubNet.
        metric: what the numbers are (e.g. ``"top1"``).
        source: ``"measured"``, ``"predictor"`` or ``"proxy"``.
    """

    def __init__(
        self,
        configs: Sequence[Mapping[str, Any]],
        accuracies: Sequence[float],
        metric: str = "top1",
        source: str = "measured",
    ) -> None:
        configs = [c if isinstance(c, SubNetConfig) else SubNetConfig(c) for c in configs]
        accuracies = [float(a) for a in accuracies]
        if len(configs) != len(accuracies):
            raise ValueError(f"AccuracyTable: {len(configs)} configs but {len(accuracies)} accuracies")
        if not configs:
            raise ValueError("AccuracyTable: needs at least one SubNet, got none")
        bad = [a for a in accuracies if not math.isfinite(a)]
        if bad:
            raise ValueError(f"AccuracyTable: accuracies must be finite numbers, got {bad[:3]}")
        if source not in _SOURCES:
            raise ValueError(f"AccuracyTable: source must be one of {list(_SOURCES)}, got {source!r}")
        self.metric, self.source = metric, source
        self._configs: dict[str, SubNetConfig] = {}
        self._acc: dict[str, float] = {}
        for cfg, acc in zip(configs, accuracies):
            if cfg.id in self._acc and self._acc[cfg.id] != acc:
                raise ValueError(f"AccuracyTable: SubNet {cfg.id} listed twice with accuracies "
                                 f"{self._acc[cfg.id]} and {acc}")
            self._configs[cfg.id], self._acc[cfg.id] = cfg, acc

    # Mapping protocol ---------------------------------------------------------------------------
    def __getitem__(self, subnet_id: str) -> float:
        return self._acc[subnet_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._acc)

    def __len__(self) -> int:
        return len(self._acc)

    def __repr__(self) -> str:
        return f"AccuracyTable({len(self)} SubNets, metric={self.metric!r}, source={self.source!r})"

    @property
    def label(self) -> str:
        """What the numbers are, for printed and reported results: ``"measured"``, ``"predicted"`` or
        ``"proxy (log-linear in MACs)"`` (ws-sushi's only proxy is :meth:`log_macs_proxy`)."""
        return ACCURACY_LABELS[self.source]

    @property
    def configs(self) -> list[SubNetConfig]:
        """The candidate SubNets, in insertion order."""
        return list(self._configs.values())

    def accuracy(self, cfg: Mapping[str, Any] | str) -> float:
        """Accuracy of SubNet ``cfg`` (a config or a SubNet id)."""
        sid = cfg if isinstance(cfg, str) else (cfg if isinstance(cfg, SubNetConfig) else SubNetConfig(cfg)).id
        try:
            return self._acc[sid]
        except KeyError:
            raise KeyError(f"AccuracyTable has no accuracy for SubNet {sid} ({len(self)} SubNets listed)") from None

    def bind(self, net: Any) -> AccuracyTable:
        """The same table with every config canonicalised by ``net``'s search space.

        Raises:
            ValueError: if a listed SubNet is outside the SuperNet (naming the dimension, the
                allowed choices and the value received).
        """
        canonical = []
        for cfg in self._configs.values():
            try:
                canonical.append(net.space.validate(cfg))
            except ValueError as e:
                raise ValueError(f"AccuracyTable: SubNet {cfg.id} is outside the SuperNet "
                                 f"{type(net).__name__}: {e}") from None
        return AccuracyTable(canonical, list(self._acc.values()), self.metric, self.source)

    # Constructors -------------------------------------------------------------------------------
    @classmethod
    def from_pairs(cls, configs: Sequence[Mapping[str, Any]], accuracies: Sequence[float],
                   metric: str = "top1", source: str = "measured") -> AccuracyTable:
        return cls(configs, accuracies, metric, source)

    @classmethod
    def measure(
        cls,
        configs: Sequence[Mapping[str, Any]],
        evaluate: Callable[[SubNetConfig], float],
        metric: str = "top1",
        on_measured: Callable[[SubNetConfig, float, int], None] | None = None,
    ) -> AccuracyTable:
        """Measured accuracies: ``evaluate(config)`` for each of ``configs``, in order (``source="measured"``).

        ``evaluate`` does the measuring, e.g. on a trained SuperNet ``net``: :func:`ws_core.bn.recalibrate_bn`
        on a few training batches, then the top-1 accuracy of the SubNet on held-out images.
        ``on_measured(config, accuracy, index)`` is called after each one (progress reports).

        Raises:
            ValueError: ``evaluate`` returned something that is not a finite number in [0, 1] (naming
                the SubNet and the value).

        Example::

            >>> table = AccuracyTable.measure(uniform_subnets(net.space), evaluate)   # doctest: +SKIP
        """
        configs = [c if isinstance(c, SubNetConfig) else SubNetConfig(c) for c in configs]
        accuracies = []
        for i, cfg in enumerate(configs):
            value = evaluate(cfg)
            try:
                acc = float(value)
            except (TypeError, ValueError):
                acc = math.nan
            if not (math.isfinite(acc) and 0.0 <= acc <= 1.0):
                raise ValueError(f"AccuracyTable.measure: evaluate({cfg.id}) returned {value!r}; "
                                 f"expected an accuracy in [0, 1]")
            accuracies.append(acc)
            if on_measured is not None:
                on_measured(cfg, acc, i)
        return cls(configs, accuracies, metric, "measured")

    @classmethod
    def from_predictor(
        cls, predictor: Any, configs: Sequence[Mapping[str, Any]], metric: str = "top1"
    ) -> AccuracyTable:
        """Predicted accuracies of ``configs`` from a :class:`ws_core.search.AccuracyPredictor`."""
        configs = list(configs)
        return cls(configs, [float(a) for a in predictor.predict(configs)], metric, "predictor")

    @classmethod
    def log_macs_proxy(
        cls,
        net: Any,
        configs: Sequence[Mapping[str, Any]],
        low: float,
        high: float,
        input_size: Sequence[int] | int | None = None,
        metric: str = f"top1, {PROXY_LABEL}",
    ) -> AccuracyTable:
        """A stand-in table: ``low`` at the fewest MACs of ``configs``, ``high`` at the most, log-linear between.

        Use it only where no measured or predicted accuracy exists; it ranks SubNets by capacity.
        """
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"log_macs_proxy: need finite low <= high, got low={low}, high={high}")
        costs = CostModel(net, input_size)
        configs = [net.space.validate(c) for c in configs]
        logs = [math.log(costs.macs(c)) for c in configs]
        lo, hi = min(logs), max(logs)
        span = hi - lo
        accs = [high if span == 0 else low + (high - low) * (v - lo) / span for v in logs]
        return cls(configs, accs, metric, "proxy")

    # Serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "source": self.source, "label": self.label,
                "entries": [{"id": sid, "config": cfg.to_dict(), "accuracy": self._acc[sid]}
                            for sid, cfg in self._configs.items()]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AccuracyTable:
        if not isinstance(d, Mapping) or not isinstance(d.get("entries"), list):
            raise ValueError("accuracy table: expected a JSON object with an 'entries' list of "
                             "{'config': {...}, 'accuracy': number}")
        configs, accs = [], []
        for i, e in enumerate(d["entries"]):
            if not isinstance(e, Mapping) or "config" not in e or "accuracy" not in e:
                raise ValueError(f"accuracy table: entry {i} needs 'config' and 'accuracy', got {e!r}")
            configs.append(SubNetConfig.from_dict(e["config"]))
            accs.append(e["accuracy"])
        return cls(configs, accs, d.get("metric", "top1"), d.get("source", "measured"))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> AccuracyTable:
        with open(path) as f:
            return cls.from_dict(json.load(f))


def uniform_subnets(space: SearchSpace, fixed: Mapping[str, Any] | None = None) -> list[SubNetConfig]:
    """The SubNets that use one choice per dimension everywhere (e.g. all blocks expand 4, kernel 5).

    Every combination of per-dimension choices, so the set spans the space from ``min()`` to
    ``max()`` along each dimension; dimensions in ``fixed`` take the given value (default: a
    ``resolution`` dimension is fixed to its largest choice).

    Example::

        >>> len(uniform_subnets(net.space))   # OFA MobileNetV3: 3 depths x 3 expands x 3 kernels
        27
    """
    fixed = dict(fixed or {})
    if "resolution" in space and "resolution" not in fixed:
        fixed["resolution"] = space["resolution"].choices[-1]
    names = [d.name for d in space.dimensions]
    unknown = sorted(set(fixed) - set(names))
    if unknown:
        raise ValueError(f"uniform_subnets: unknown dimensions {unknown}; the space has {names}")
    per_dim = [[fixed[d.name]] if d.name in fixed else list(d.choices) for d in space.dimensions]
    reference = space.max()
    out = []
    for combo in itertools.product(*per_dim):
        values = {}
        for dim, choice in zip(space.dimensions, combo):
            current = reference[dim.name]
            values[dim.name] = tuple(choice for _ in current) if isinstance(current, tuple) else choice
        out.append(space.validate(values))
    return list(dict.fromkeys(out))


"""``SuperFedNAS``: a Flower strategy that trains one SuperNet through per-client SubNets.

Built on Flower's message-API :class:`flwr.serverapp.strategy.FedAvg`; the base class keeps the round
loop (:meth:`~flwr.serverapp.strategy.Strategy.start`), this class overrides the two steps FedAvg
cannot do for SubNets (it sends one payload to every node and averages whole tensors of equal shape):

* :meth:`SuperFedNAS.configure_train` samples nodes (seeded), assigns each a SubNet (tracking
  sandwich, :mod:`ws_fed.sandwich`) and sends it **only that SubNet's weight slices**
  (:meth:`ws_core.SuperNet.weight_slices`) plus its config as JSON (``config["subnet"]``);
* :meth:`SuperFedNAS.aggregate_train` checks every reply against the SubNet sent to that node (keys,
  shapes, finite values; failures are logged and never aggregated) and averages every element over
  exactly the clients whose SubNet contains it, with the MaxNet β weights
  (:func:`ws_fed.aggregation.aggregate_overlapping`). Fewer valid replies than ``min_train_replies``
  leave the global model unchanged.

:class:`FedAvgSubNet` is the baseline in the same code: every client trains one fixed SubNet.

Every round's communication (bytes of the serialized arrays, both directions) and client compute
(training MACs ≈ 3 × forward MACs × samples processed, from ``ws_core.cost.CostModel``) is recorded in
:attr:`SuperFedNAS.costs` and in the round's train MetricRecord.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result
from flwr.supercore import log

from ws_core import SubNetConfig, SuperNet
from ws_core.cost import CostModel

from .aggregation import SCHEDULES, SubNetUpdate, aggregate_overlapping, maxnet_beta, maxnet_weights, round_lr
from .payload import InvalidSubNetArrays, check_subnet_arrays, slice_arrays
from .sandwich import StaticSubNet, SubNetAssignment, TrackingSandwich

__all__ = ["TRAIN_MAC_FACTOR", "FedAvgSubNet", "RoundCost", "SuperFedNAS"]

TRAIN_MAC_FACTOR = 3
"""Training MACs per sample as a multiple of forward MACs (forward + backward ≈ 3 × forward)."""

SUBNET_KEY = "subnet"


@dataclass
class RoundCost:
    """What one training round cost and how its replies fared."""

    server_round: int
    bytes_down: int = 0
    bytes_up: int = 0
    client_macs: int = 0
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    dropped: int = 0
    aggregated: bool = False
    subnets: dict[int, str] = field(default_factory=dict)  # node id -> SubNet id


@dataclass(frozen=True)
class _Sent:
    subnet: SubNetConfig
    slices: dict[str, tuple[slice, ...]]
    shapes: dict[str, tuple[int, ...]]


def _record_nbytes(record: ArrayRecord) -> int:
    return int(sum(len(arr.data) for arr in record.values()))


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class SuperFedNAS(FedAvg):
    """SuperFedNAS (Khare et al., ECCV 2024) on Flower's message API.

    Args:
        supernet: the SuperNet being trained (its architecture defines the slices; its weights are
            not read — the global model is the ``initial_arrays`` passed to :meth:`start`).
        assignment: the per-round SubNet rule; default :class:`~ws_fed.sandwich.TrackingSandwich`
            with ``top_k_maxnet`` / ``bottom_k_minnet``.
        fraction_train: share of the connected nodes sampled per round (at least ``min_train_nodes``).
        min_train_nodes: nodes sampled per round at least.
        min_available_nodes: wait until this many nodes are connected before sampling.
        min_train_replies: valid replies needed to aggregate; with fewer, the round leaves the global
            model unchanged (and says so in the log).
        fraction_evaluate / min_evaluate_nodes: federated evaluation of ``evaluate_subnet`` (default:
            the max net) on the clients; 0 disables it.
        beta_initial / beta_final / beta_decay_rounds / beta_schedule: the MaxNet β schedule
            (:func:`~ws_fed.aggregation.maxnet_beta`); ``beta_final=None`` is 1/K for K nodes per
            round, ``beta_decay_rounds=None`` is 0.8 × ``num_rounds`` of :meth:`start`.
        weight_by_num_examples: also weight each client by its share of examples (``num-examples``).
        lr_schedule / lr_final: anneal the train config's ``"lr"`` over the rounds of :meth:`start`
            (:func:`~ws_fed.aggregation.round_lr`: ``"cosine"``, ``"linear"``, or ``"constant"``, the
            default, which sends the config's ``"lr"`` unchanged); each round's value is sent to its clients.
        seed: seeds node sampling and random SubNets (round ``r`` uses ``seed`` and ``r``).

    Example::

        >>> strategy = SuperFedNAS(net, fraction_train=0.4, min_train_nodes=2)      # doctest: +SKIP
        >>> result = strategy.start(grid, ArrayRecord(net.state_dict()), num_rounds=10)  # doctest: +SKIP
    """

    def __init__(
        self,
        supernet: SuperNet,
        *,
        assignment: SubNetAssignment | None = None,
        top_k_maxnet: int = 1,
        bottom_k_minnet: int = 1,
        fraction_train: float = 1.0,
        min_train_nodes: int = 2,
        min_available_nodes: int = 2,
        min_train_replies: int = 1,
        fraction_evaluate: float = 0.0,
        min_evaluate_nodes: int = 2,
        evaluate_subnet: Mapping[str, Any] | SubNetConfig | None = None,
        beta_initial: float = 0.9,
        beta_final: float | None = None,
        beta_decay_rounds: int | None = None,
        beta_schedule: str = "cosine",
        weight_by_num_examples: bool = False,
        lr_schedule: str = "constant",
        lr_final: float = 0.0,
        seed: int = 0,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
        evaluate_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
    ) -> None:
        if not isinstance(supernet, SuperNet):
            raise TypeError(f"supernet must be a ws_core.SuperNet, got {type(supernet).__name__}")
        if not (isinstance(fraction_train, (int, float)) and 0 < fraction_train <= 1):
            raise ValueError(f"fraction_train must be in (0, 1], got {fraction_train!r}")
        for name, value in (("min_train_nodes", min_train_nodes), ("min_available_nodes", min_available_nodes),
                            ("min_train_replies", min_train_replies)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if beta_decay_rounds is not None and (not isinstance(beta_decay_rounds, int) or beta_decay_rounds < 1):
            raise ValueError(f"beta_decay_rounds must be None or an int >= 1, got {beta_decay_rounds!r}")
        maxnet_beta(1, 1, beta_initial, 0.0 if beta_final is None else beta_final, beta_schedule)  # validates
        if lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be 'cosine', 'linear' or 'constant', got {lr_schedule!r}")
        if isinstance(lr_final, bool) or not isinstance(lr_final, (int, float)) or not 0 <= lr_final < math.inf:
            raise ValueError(f"lr_final must be a number >= 0, got {lr_final!r}")
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
            weighted_by_key=weighted_by_key,
            arrayrecord_key=arrayrecord_key,
            configrecord_key=configrecord_key,
            train_metrics_aggr_fn=train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        )
        self.supernet = supernet
        self.space = supernet.space
        self.assignment = assignment if assignment is not None else TrackingSandwich(
            self.space, top_k_maxnet=top_k_maxnet, bottom_k_minnet=bottom_k_minnet)
        self.min_train_replies = min_train_replies
        self.evaluate_subnet = self.space.validate(evaluate_subnet if evaluate_subnet is not None else self.space.max())
        self.beta_initial = float(beta_initial)
        self.beta_final = None if beta_final is None else float(beta_final)
        self.beta_decay_rounds = beta_decay_rounds
        self.beta_schedule = beta_schedule
        self.weight_by_num_examples = bool(weight_by_num_examples)
        self.lr_schedule = lr_schedule
        self.lr_final = float(lr_final)
        self.seed = int(seed)
        self.costs: list[RoundCost] = []
        self.num_rounds: int | None = None
        self._cost_model = CostModel(supernet)
        self._macs: dict[SubNetConfig, int] = {}
        self._slices: dict[SubNetConfig, dict[str, tuple[slice, ...]]] = {}
        self._global: dict[str, np.ndarray] | None = None
        self._global_record: ArrayRecord | None = None  # the record self._global was decoded from / encoded to
        self._sent: dict[int, _Sent] = {}
        self._round_cost: RoundCost | None = None

    # Round loop ----------------------------------------------------------------------------------
    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              train_config: ConfigRecord | None = None, evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None) -> Result:
        """Flower's round loop (see :meth:`flwr.serverapp.strategy.Strategy.start`); checks the initial
        arrays against the SuperNet and remembers ``num_rounds`` for the β schedule."""
        self._check_global(initial_arrays)
        self.num_rounds = int(num_rounds)
        return super().start(grid, initial_arrays, num_rounds=num_rounds, timeout=timeout,
                             train_config=train_config, evaluate_config=evaluate_config, evaluate_fn=evaluate_fn)

    def summary(self) -> None:
        """Log the configuration (called by :meth:`start`): FedAvg's sampling and record keys, then what
        SuperFedNAS adds. FedAvg's ``Weighted by`` line says what its key weights: the clients' metrics
        always, the model's aggregation only with ``weight_by_num_examples``."""
        key = self.weighted_by_key
        beta = f"MaxNet beta {self.beta_initial:.3f} -> " + (
            "1/K" if self.beta_final is None else f"{self.beta_final:.3f}") + f" ({self.beta_schedule})"
        if self.weight_by_num_examples:
            weighted_by = f"'{key}' (client metrics and model aggregation)"
            model_weights = f"{beta} × each client's '{key}' (weight_by_num_examples=True)"
        else:
            weighted_by = f"'{key}' (client metrics only; the model is not weighted by examples)"
            model_weights = f"{beta}; not weighted by examples (weight_by_num_examples=False)"
        lr = self.lr_schedule if self.lr_schedule == "constant" else f"{self.lr_schedule} -> {self.lr_final:g}"
        lines = [
            "\t├──> Sampling:",
            f"\t│\t├── Fraction: train ({self.fraction_train:.2f}) | evaluate ({self.fraction_evaluate:.2f})",
            f"\t│\t├── Minimum nodes: train ({self.min_train_nodes}) | evaluate ({self.min_evaluate_nodes})",
            f"\t│\t└── Minimum available nodes: {self.min_available_nodes}",
            "\t├──> Keys in records:",
            f"\t│\t├── Weighted by: {weighted_by}",
            f"\t│\t├── ArrayRecord key: '{self.arrayrecord_key}'",
            f"\t│\t└── ConfigRecord key: '{self.configrecord_key}'",
            "\t└──> SuperFedNAS:",
            f"\t\t├── SubNet assignment: {self.assignment}",
            f"\t\t├── Model aggregation weights: {model_weights}",
            f"\t\t├── Minimum valid train replies: {self.min_train_replies}",
            f"\t\t├── lr schedule: {lr}",
            f"\t\t└── Seed: {self.seed}",
        ]
        for line in lines:
            log(INFO, "%s", line)

    # Helpers -------------------------------------------------------------------------------------
    def _check_global(self, arrays: ArrayRecord) -> dict[str, np.ndarray]:
        state = {k: np.asarray(v.detach().cpu().numpy()) for k, v in self.supernet.state_dict().items()}
        got = {k: v.numpy() for k, v in arrays.items()}
        try:
            check_subnet_arrays(got, {k: v.shape for k, v in state.items()})
        except InvalidSubNetArrays as e:
            raise ValueError(f"initial/global arrays do not fit the SuperNet: {e}") from None
        return got

    def subnet_slices(self, subnet: SubNetConfig) -> dict[str, tuple[slice, ...]]:
        """``supernet.weight_slices(subnet)``, cached per SubNet."""
        slices = self._slices.get(subnet)
        if slices is None:
            slices = self.supernet.weight_slices(subnet)
            if len(self._slices) > 4096:
                self._slices.clear()
            self._slices[subnet] = slices
        return slices

    def subnet_macs(self, subnet: SubNetConfig) -> int:
        """Forward MACs of one sample through ``subnet`` (``ws_core.cost.CostModel``), cached."""
        macs = self._macs.get(subnet)
        if macs is None:
            macs = self._macs[subnet] = int(self._cost_model.macs(subnet))
        return macs

    def _sample(self, grid: Grid, fraction: float, minimum: int, server_round: int, salt: int) -> list[int]:
        all_nodes = sorted(grid.get_node_ids())
        size = max(int(len(all_nodes) * fraction), minimum)
        needed = max(self.min_available_nodes, size)
        while len(all_nodes) < needed:
            log(INFO, "Waiting for nodes to connect: %d connected (minimum required: %d).", len(all_nodes), needed)
            time.sleep(1)
            all_nodes = sorted(grid.get_node_ids())
        rng = np.random.default_rng([self.seed, server_round, salt])
        chosen = rng.choice(len(all_nodes), size=size, replace=False)
        return [int(all_nodes[i]) for i in sorted(chosen)]

    def _beta(self, server_round: int, clients_per_round: int) -> float:
        decay = self.beta_decay_rounds or max(1, round(0.8 * (self.num_rounds or server_round)))
        final = self.beta_final if self.beta_final is not None else 1.0 / max(1, clients_per_round)
        return maxnet_beta(server_round, decay, self.beta_initial, final, self.beta_schedule)

    # Training ------------------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample nodes, assign SubNets and send each node its SubNet's weight slices and config."""
        if arrays is not self._global_record or self._global is None:  # else: our own last aggregate
            self._global = {k: v.numpy() for k, v in arrays.items()}
            self._global_record = arrays
        self._sent = {}
        cost = RoundCost(server_round)
        self.costs.append(cost)
        self._round_cost = cost
        node_ids = self._sample(grid, self.fraction_train, self.min_train_nodes, server_round, salt=0)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + server_round)
        plan: Mapping[Hashable, SubNetConfig] = self.assignment.assign(node_ids, generator)
        log(INFO, "configure_train: %d nodes, SubNets %s", len(node_ids),
            ", ".join(f"{self.subnet_macs(plan[n]) / 1e6:.2f}M MACs" for n in node_ids))
        round_config = dict(config.items())
        if self.lr_schedule != "constant" and "lr" in round_config:
            round_config["lr"] = round_lr(server_round, max(self.num_rounds or 1, server_round),
                                          float(round_config["lr"]), self.lr_final, self.lr_schedule)
        messages = []
        for node_id in node_ids:
            subnet = self.space.validate(plan[node_id])
            slices = self.subnet_slices(subnet)
            payload = slice_arrays(self._global, slices)
            record = ArrayRecord({k: Array(v) for k, v in payload.items()})
            node_config = ConfigRecord(dict(round_config))
            node_config["server-round"] = server_round
            node_config[SUBNET_KEY] = subnet.to_json()
            content = RecordDict({self.arrayrecord_key: record, self.configrecord_key: node_config})
            messages.append(Message(content=content, dst_node_id=node_id, message_type=MessageType.TRAIN,
                                    group_id=str(server_round)))
            self._sent[node_id] = _Sent(subnet, slices, {k: tuple(v.shape) for k, v in payload.items()})
            cost.bytes_down += _record_nbytes(record)
            cost.subnets[node_id] = subnet.id
        cost.sent = len(messages)
        return messages

    def _parse_reply(self, msg: Message, sent: _Sent) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        content = msg.content
        if len(content.array_records) != 1:
            raise InvalidSubNetArrays(f"expected exactly one ArrayRecord, got {len(content.array_records)}")
        if len(content.metric_records) != 1:
            raise InvalidSubNetArrays(f"expected exactly one MetricRecord, got {len(content.metric_records)}")
        record = next(iter(content.array_records.values()))
        metrics = dict(next(iter(content.metric_records.values())).items())
        arrays: dict[str, np.ndarray] = {}
        for key, arr in record.items():
            try:
                arrays[key] = arr.numpy()
            except Exception as e:  # a malformed payload must not stop the round
                raise InvalidSubNetArrays(f"{key!r}: unreadable array ({type(e).__name__}: {e})") from None
        check_subnet_arrays(arrays, sent.shapes)
        n = _as_number(metrics.get(self.weighted_by_key))
        if self.weight_by_num_examples and (n is None or n <= 0):
            raise InvalidSubNetArrays(
                f"metric {self.weighted_by_key!r} must be a number > 0, got {metrics.get(self.weighted_by_key)!r}")
        return arrays, metrics

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate replies and aggregate the valid ones over exactly the elements their SubNets contain."""
        if self._global is None or self._round_cost is None or self._round_cost.server_round != server_round:
            raise RuntimeError(f"aggregate_train(round {server_round}) without configure_train for that round")
        cost = self._round_cost
        pending = dict(self._sent)
        accepted: list[tuple[Message, _Sent, dict[str, np.ndarray], dict[str, Any]]] = []
        for msg in replies:
            node_id = msg.metadata.src_node_id
            if msg.has_error():
                cost.failed += 1
                pending.pop(node_id, None)
                log(WARNING, "aggregate_train: node %d failed: %s", node_id, msg.error.reason)
                continue
            if msg.has_content():
                for record in msg.content.array_records.values():
                    cost.bytes_up += _record_nbytes(record)
            sent = pending.pop(node_id, None)
            if sent is None:
                cost.rejected += 1
                why = "a second reply" if node_id in self._sent else "no SubNet was sent to it this round"
                log(WARNING, "aggregate_train: rejected reply from node %d (%s)", node_id, why)
                continue
            try:
                arrays, metrics = self._parse_reply(msg, sent)
            except InvalidSubNetArrays as e:
                cost.rejected += 1
                log(WARNING, "aggregate_train: rejected reply from node %d (SubNet %s): %s",
                    node_id, sent.subnet.id, e)
                continue
            accepted.append((msg, sent, arrays, metrics))
            samples = _as_number(metrics.get("train-samples")) or 0.0
            cost.client_macs += int(TRAIN_MAC_FACTOR * self.subnet_macs(sent.subnet) * samples)
        cost.accepted = len(accepted)
        cost.dropped = len(pending)
        if pending:
            log(WARNING, "aggregate_train: no reply from %d node(s): %s", len(pending), sorted(pending))

        beta = self._beta(server_round, max(1, cost.sent))
        metrics = MetricRecord({
            "replies-accepted": cost.accepted, "replies-rejected": cost.rejected,
            "replies-failed": cost.failed, "nodes-dropped": cost.dropped, "maxnet-beta": beta,
            "bytes-down": cost.bytes_down, "bytes-up": cost.bytes_up, "client-macs": cost.client_macs,
        })
        if len(accepted) < self.min_train_replies:
            log(WARNING, "aggregate_train: %d valid replies < min_train_replies=%d; global model unchanged",
                len(accepted), self.min_train_replies)
            return None, metrics

        largest = self.space.max()
        is_max = [sent.subnet == largest for _, sent, _, _ in accepted]
        examples = None
        if self.weight_by_num_examples:
            examples = [float(m[self.weighted_by_key]) for _, _, _, m in accepted]
        weights = maxnet_weights(is_max, beta, examples)
        updates = [SubNetUpdate(arrays, sent.slices, w) for (_, sent, arrays, _), w in zip(accepted, weights)]
        new = aggregate_overlapping(self._global, updates)
        self._global = new
        cost.aggregated = True

        try:
            client_metrics = self.train_metrics_aggr_fn([m.content for m, _, _, _ in accepted], self.weighted_by_key)
            for key, value in client_metrics.items():
                metrics[key] = value
        except Exception as e:  # clients' extra metrics are informative only; say why they are missing
            log(WARNING, "aggregate_train: client metrics not aggregated (%s: %s)", type(e).__name__, e)
        record = ArrayRecord({k: Array(v) for k, v in new.items()})
        self._global_record = record
        return record, metrics

    # Federated evaluation -----------------------------------------------------------------------
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send ``evaluate_subnet``'s slices to a sample of nodes (none if ``fraction_evaluate`` is 0)."""
        if self.fraction_evaluate == 0.0:
            return []
        node_ids = self._sample(grid, self.fraction_evaluate, self.min_evaluate_nodes, server_round, salt=1)
        payload = slice_arrays({k: v.numpy() for k, v in arrays.items()}, self.subnet_slices(self.evaluate_subnet))
        node_config = ConfigRecord(dict(config.items()))
        node_config["server-round"] = server_round
        node_config[SUBNET_KEY] = self.evaluate_subnet.to_json()
        content = RecordDict({self.arrayrecord_key: ArrayRecord({k: Array(v) for k, v in payload.items()}),
                              self.configrecord_key: node_config})
        return [Message(content=content, dst_node_id=node_id, message_type=MessageType.EVALUATE,
                        group_id=str(server_round)) for node_id in node_ids]

    # Totals --------------------------------------------------------------------------------------
    def total_cost(self) -> dict[str, int]:
        """Sums over all rounds so far: ``bytes_down``, ``bytes_up``, ``bytes``, ``client_macs``."""
        down = sum(c.bytes_down for c in self.costs)
        up = sum(c.bytes_up for c in self.costs)
        return {"bytes_down": down, "bytes_up": up, "bytes": down + up,
                "client_macs": sum(c.client_macs for c in self.costs)}


class FedAvgSubNet(SuperFedNAS):
    """FedAvg of one fixed SubNet, in the same code: every client trains ``subnet`` and only its slices
    travel. Aggregation is then plain FedAvg over those slices (weighted by ``num-examples`` by default);
    elements outside the SubNet are never touched.

    Args:
        supernet: the SuperNet whose SubNet is trained.
        subnet: the fixed architecture.
        weight_by_num_examples: FedAvg's weighting (default ``True``).
        **kwargs: as for :class:`SuperFedNAS` (sampling, minimum replies, seed, ...).
    """

    def __init__(self, supernet: SuperNet, subnet: Mapping[str, Any] | SubNetConfig, *,
                 weight_by_num_examples: bool = True, **kwargs: Any) -> None:
        if "assignment" in kwargs:
            raise TypeError("FedAvgSubNet assigns its fixed subnet; do not pass assignment")
        kwargs.setdefault("evaluate_subnet", subnet)
        super().__init__(supernet, assignment=StaticSubNet(supernet.space, subnet),
                         weight_by_num_examples=weight_by_num_examples, **kwargs)
        self.subnet = self.assignment.subnet  # type: ignore[attr-defined]

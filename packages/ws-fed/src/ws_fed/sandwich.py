"""SubNet assignment per round: SuperFedNAS's tracking sandwich, and the static rule of FedAvg.

**Tracking sandwich** (``subnet_dist_type=TS_all_random``): every client keeps two counters, how often
it trained the largest and how often the smallest SubNet. Among the clients of a round, the
``top_k_maxnet`` clients that trained the max net least often get the **max net**, then the
``bottom_k_minnet`` (of the rest) that trained the min net least often get the **min net**, and every
other client gets a **uniformly random SubNet** (:meth:`ws_core.SearchSpace.sample`). Ties go to the
client listed first. Over the rounds the max and min nets thus visit every client's data.

**Static** assignment gives every client the same SubNet: FedAvg of one fixed architecture is the
special case of SuperFedNAS with this rule (``subnet_dist_type=static``).

Example::

    >>> import timm, torch, ws_core
    >>> space = timm.create_model("ws_ofa_mbv3_035_32").space
    >>> ts = TrackingSandwich(space)
    >>> plan = ts.assign([7, 3, 5], generator=torch.Generator().manual_seed(0))
    >>> plan[7] == space.max(), plan[3] == space.min()
    (True, True)
    >>> ts.assign([7, 3, 5])[5] == space.max()    # client 5 has not trained the max net yet
    True
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Protocol

import torch

from ws_core import SearchSpace, SubNetConfig

__all__ = ["StaticSubNet", "SubNetAssignment", "TrackingSandwich", "tracking_sandwich"]


class SubNetAssignment(Protocol):
    """A per-round rule mapping the sampled clients to SubNets."""

    def assign(
        self, clients: Sequence[Hashable], generator: torch.Generator | None = None
    ) -> dict[Hashable, SubNetConfig]: ...


def _check_k(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return value


def tracking_sandwich(
    clients: Sequence[Hashable],
    space: SearchSpace,
    max_counts: Mapping[Hashable, int],
    min_counts: Mapping[Hashable, int],
    *,
    top_k_maxnet: int = 1,
    bottom_k_minnet: int = 1,
    generator: torch.Generator | None = None,
) -> dict[Hashable, SubNetConfig]:
    """Assign SubNets to one round's ``clients`` by the tracking-sandwich rule (pure; counters untouched).

    Args:
        clients: this round's clients, in a fixed order (ties are broken by this order).
        space: the SuperNet's search space.
        max_counts / min_counts: how often each client trained the max / min net so far
            (missing clients count 0).
        top_k_maxnet: clients that get the max net (fewer if the round is smaller).
        bottom_k_minnet: clients that get the min net, chosen among the others.
        generator: randomness of the random SubNets (sampled in the order of ``clients``).

    Returns:
        ``{client: SubNetConfig}`` for every client.
    """
    _check_k("top_k_maxnet", top_k_maxnet)
    _check_k("bottom_k_minnet", bottom_k_minnet)
    order = list(clients)
    if len(set(order)) != len(order):
        raise ValueError(f"clients must be distinct, got {order}")
    position = {c: i for i, c in enumerate(order)}
    by_max = sorted(order, key=lambda c: (max_counts.get(c, 0), position[c]))
    maxnet = by_max[:top_k_maxnet]
    rest = [c for c in order if c not in set(maxnet)]
    by_min = sorted(rest, key=lambda c: (min_counts.get(c, 0), position[c]))
    minnet = set(by_min[:bottom_k_minnet])
    largest, smallest = space.max(), space.min()
    plan: dict[Hashable, SubNetConfig] = {}
    for c in order:
        if c in maxnet:
            plan[c] = largest
        elif c in minnet:
            plan[c] = smallest
        else:
            plan[c] = space.sample(generator)
    return plan


class TrackingSandwich:
    """The tracking-sandwich rule with its per-client counters (see the module docstring).

    Args:
        space: the SuperNet's search space.
        top_k_maxnet: clients per round that train the max net (SuperFedNAS default 1).
        bottom_k_minnet: clients per round that train the min net (default 1).
    """

    def __init__(self, space: SearchSpace, top_k_maxnet: int = 1, bottom_k_minnet: int = 1) -> None:
        if not isinstance(space, SearchSpace):
            raise TypeError(f"space must be a ws_core.SearchSpace, got {type(space).__name__}")
        self.space = space
        self.top_k_maxnet = _check_k("top_k_maxnet", top_k_maxnet)
        self.bottom_k_minnet = _check_k("bottom_k_minnet", bottom_k_minnet)
        self.max_counts: dict[Hashable, int] = {}
        self.min_counts: dict[Hashable, int] = {}

    def assign(
        self, clients: Sequence[Hashable], generator: torch.Generator | None = None
    ) -> dict[Hashable, SubNetConfig]:
        """Assign this round's SubNets and count the max/min assignments."""
        plan = tracking_sandwich(
            clients, self.space, self.max_counts, self.min_counts,
            top_k_maxnet=self.top_k_maxnet, bottom_k_minnet=self.bottom_k_minnet, generator=generator,
        )
        largest, smallest = self.space.max(), self.space.min()
        for c, cfg in plan.items():
            if cfg == largest:
                self.max_counts[c] = self.max_counts.get(c, 0) + 1
            elif cfg == smallest:
                self.min_counts[c] = self.min_counts.get(c, 0) + 1
        return plan

    def state_dict(self) -> dict[str, Any]:
        """Counters as JSON-ready lists of ``[client, count]`` (clients are Flower node ids)."""
        return {"max_counts": [[c, n] for c, n in self.max_counts.items()],
                "min_counts": [[c, n] for c, n in self.min_counts.items()]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.max_counts = {c: int(n) for c, n in state.get("max_counts", [])}
        self.min_counts = {c: int(n) for c, n in state.get("min_counts", [])}

    def __repr__(self) -> str:
        return f"TrackingSandwich(top_k_maxnet={self.top_k_maxnet}, bottom_k_minnet={self.bottom_k_minnet})"


class StaticSubNet:
    """Every client trains the same SubNet (FedAvg of one fixed architecture).

    Args:
        space: the SuperNet's search space (validates ``subnet``).
        subnet: the SubNet every client trains.
    """

    def __init__(self, space: SearchSpace, subnet: Mapping[str, Any] | SubNetConfig) -> None:
        self.space = space
        self.subnet = space.validate(subnet)

    def assign(
        self, clients: Sequence[Hashable], generator: torch.Generator | None = None
    ) -> dict[Hashable, SubNetConfig]:
        return {c: self.subnet for c in clients}

    def __repr__(self) -> str:
        return f"StaticSubNet(id={self.subnet.id})"

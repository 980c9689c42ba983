"""SubGraphs: the weight regions that SubNets of one SuperNet have in common.

SUSHI ("SubGraph Stationary", Behnam et al., MLSys 2023) keeps the part of the weight-shared graph
that consecutive SubNets share on chip. Here a **SubGraph** is, per state-dict tensor of the
SuperNet, one rectangular region of that tensor — exactly the form of ws-core's
:meth:`~ws_core.supernet.SuperNet.weight_slices` (leading channels, centre kernel crop). So:

* the SubGraph of one SubNet is its ``weight_slices`` (:func:`subnet_subgraph`);
* the SubGraph a *set* of SubNets shares is, per tensor, the intersection of their regions, for the
  tensors every one of them reads (:func:`common_subgraph`) — for OFA SuperNets the common leading
  channels, the smallest common centre crop, the blocks every SubNet runs;
* a SubNet must still fetch from off-chip memory the bytes of its SubGraph that the cached SubGraph
  does not hold (:func:`fetch_bytes`).

Sizes are in bytes at a given weight bit-width; each tensor region is packed on its own and rounded
up to whole bytes (``ceil(numel · bits / 8)``). The training-only BN counter ``num_batches_tracked``
is not part of any SubGraph; BN affine parameters and running statistics are (an accelerator needs
them, or their folded form, at inference).

Example::

    >>> import timm, ws_core
    >>> net = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10)
    >>> small, large = subnet_subgraph(net, net.space.min()), subnet_subgraph(net, net.space.max())
    >>> common_subgraph([small, large]) == small      # OFA SubNets nest: the min SubNet is common
    True
    >>> fetch_bytes(large, cached=small, bits=8) == large.nbytes(8) - small.nbytes(8)
    True
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from torch import nn

__all__ = [
    "Region",
    "SubGraph",
    "check_bits",
    "common_subgraph",
    "fetch_bytes",
    "intersect_region",
    "region_numel",
    "subnet_subgraph",
    "supernet_subgraph",
]

#: one ``slice(start, stop)`` per tensor dimension
Region = tuple[slice, ...]

#: state-dict entries no SubGraph holds (training-only bookkeeping)
TRAINING_ONLY = ("num_batches_tracked",)


def check_bits(bits: int) -> int:
    """Validate a weight bit-width (an int in [1, 32])."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
        raise ValueError(f"bits must be an int in [1, 32], got {bits!r}")
    return bits


def _bytes(numel: int, bits: int) -> int:
    return (numel * bits + 7) // 8


def _as_region(key: str, region: Sequence[Any]) -> Region:
    out = []
    for d, s in enumerate(region):
        if isinstance(s, slice):
            if s.step not in (None, 1):
                raise ValueError(f"SubGraph {key!r}: dim {d} must be a contiguous slice (step 1), got step {s.step}")
            start, stop = s.start or 0, s.stop
        elif isinstance(s, Sequence) and len(s) == 2:
            start, stop = s
        else:
            raise ValueError(f"SubGraph {key!r}: dim {d} must be a slice or a [start, stop] pair, got {s!r}")
        if not (isinstance(start, int) and isinstance(stop, int)) or isinstance(start, bool) or isinstance(stop, bool):
            raise ValueError(f"SubGraph {key!r}: dim {d} bounds must be ints, got [{start!r}, {stop!r}]")
        if not 0 <= start < stop:
            raise ValueError(f"SubGraph {key!r}: dim {d} needs 0 <= start < stop, got [{start}, {stop}]")
        out.append(slice(start, stop))
    return tuple(out)


def region_numel(region: Region) -> int:
    """Number of elements in a region (``()`` — a scalar — holds one)."""
    return math.prod(s.stop - s.start for s in region)


def intersect_region(a: Region, b: Region) -> Region | None:
    """The region two regions of the same tensor share, or ``None`` if they share nothing."""
    if len(a) != len(b):
        raise ValueError(f"regions of one tensor must have the same rank, got {len(a)} and {len(b)} dims")
    out = []
    for x, y in zip(a, b):
        start, stop = max(x.start, y.start), min(x.stop, y.stop)
        if stop <= start:
            return None
        out.append(slice(start, stop))
    return tuple(out)


class SubGraph(Mapping):
    """An immutable SubGraph: ``{state-dict key: Region}``.

    Args:
        regions: per tensor, one ``slice`` (or ``[start, stop]`` pair) per dimension; contiguous,
            non-empty. Tensors a SubGraph does not hold are absent.

    Example::

        >>> g = SubGraph({"conv.weight": (slice(0, 4), slice(0, 2)), "bn.bias": [[0, 4]]})
        >>> g.numel(), g.nbytes(bits=4)
        (12, 6)
    """

    __slots__ = ("_bytes", "_hash", "_regions")

    def __init__(self, regions: Mapping[str, Sequence[Any]] | None = None) -> None:
        regions = regions or {}
        norm = {}
        for key, region in regions.items():
            if not isinstance(key, str):
                raise TypeError(f"SubGraph keys must be state-dict names (str), got {key!r}")
            norm[key] = _as_region(key, region)
        object.__setattr__(self, "_regions", norm)
        object.__setattr__(self, "_hash", None)
        object.__setattr__(self, "_bytes", {})

    @classmethod
    def _trusted(cls, regions: dict[str, Region]) -> SubGraph:
        """Build from regions that are already normalised (internal fast path)."""
        self = cls.__new__(cls)
        object.__setattr__(self, "_regions", regions)
        object.__setattr__(self, "_hash", None)
        object.__setattr__(self, "_bytes", {})
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("SubGraph is immutable")

    # Mapping protocol ---------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Region:
        return self._regions[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._regions)

    def __len__(self) -> int:
        return len(self._regions)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SubGraph):
            return NotImplemented
        return self._regions == other._regions

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(frozenset(
                (k, tuple((s.start, s.stop) for s in r)) for k, r in self._regions.items())))
        return self._hash

    def __repr__(self) -> str:
        return f"SubGraph({len(self)} tensors, {self.numel()} elements)"

    # Sizes --------------------------------------------------------------------------------------
    def numel(self) -> int:
        """Elements held, over all tensors."""
        return sum(region_numel(r) for r in self._regions.values())

    def tensor_bytes(self, bits: int = 8) -> dict[str, int]:
        """Bytes per tensor at ``bits`` per weight (each tensor rounded up to whole bytes)."""
        cached = self._bytes.get(bits)
        if cached is None:
            check_bits(bits)
            cached = self._bytes[bits] = {k: _bytes(region_numel(r), bits) for k, r in self._regions.items()}
        return dict(cached)

    def nbytes(self, bits: int = 8) -> int:
        """Bytes of the whole SubGraph at ``bits`` per weight."""
        self.tensor_bytes(bits)
        return sum(self._bytes[bits].values())

    # Set operations -----------------------------------------------------------------------------
    def intersect(self, other: SubGraph) -> SubGraph:
        """The SubGraph both hold: per shared tensor, the intersection of the two regions."""
        out = {}
        for key, region in self._regions.items():
            theirs = other._regions.get(key)
            if theirs is not None:
                common = region if region == theirs else intersect_region(region, theirs)
                if common is not None:
                    out[key] = common
        return SubGraph._trusted(out)

    __and__ = intersect

    def issubset(self, other: SubGraph) -> bool:
        """Whether ``other`` holds every element this SubGraph holds."""
        return self.intersect(other) == self

    def restrict(self, keys: Iterable[str]) -> SubGraph:
        """The part of this SubGraph on the tensors ``keys`` (others dropped)."""
        keys = set(keys)
        return SubGraph._trusted({k: r for k, r in self._regions.items() if k in keys})

    # Serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, list[list[int]]]:
        """``{key: [[start, stop], ...]}`` (JSON-ready)."""
        return {k: [[s.start, s.stop] for s in r] for k, r in self._regions.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence[Sequence[int]]]) -> SubGraph:
        return cls(d)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, s: str) -> SubGraph:
        return cls.from_dict(json.loads(s))

    def check_within(self, net: nn.Module) -> SubGraph:
        """Raise ``ValueError`` unless every region lies inside a tensor of ``net``; returns ``self``."""
        shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        for key, region in self._regions.items():
            shape = shapes.get(key)
            if shape is None:
                raise ValueError(
                    f"SubGraph tensor {key!r} is not a tensor of the SuperNet {type(net).__name__} "
                    f"(it has {len(shapes)} tensors, e.g. {sorted(shapes)[:3]})"
                )
            if len(region) != len(shape) or any(s.stop > n for s, n in zip(region, shape)):
                got = [[s.start, s.stop] for s in region]
                raise ValueError(
                    f"SubGraph region {got} of {key!r} lies outside the SuperNet tensor of shape {list(shape)}"
                )
        return self


def _training_only(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in TRAINING_ONLY


def subnet_subgraph(net: Any, cfg: Mapping[str, Any]) -> SubGraph:
    """The SubGraph SubNet ``cfg`` of SuperNet ``net`` reads (its ``weight_slices``).

    Raises:
        ValueError: if ``cfg`` is not a SubNet of ``net`` (outside its search space), naming the
            dimension, the allowed choices and the value received.
    """
    try:
        canonical = net.space.validate(cfg)
    except ValueError as e:
        raise ValueError(f"SubNet is outside the SuperNet {type(net).__name__}: {e}") from None
    return SubGraph({k: r for k, r in net.weight_slices(canonical).items() if not _training_only(k)})


def supernet_subgraph(net: nn.Module) -> SubGraph:
    """Every weight region any SubNet can read: the whole SuperNet (its size is "the model size")."""
    return SubGraph({k: tuple(slice(0, n) for n in v.shape)
                     for k, v in net.state_dict().items() if not _training_only(k) and v.numel() > 0})


def common_subgraph(subgraphs: Iterable[SubGraph]) -> SubGraph:
    """The SubGraph a set of SubNets shares: per tensor all of them read, the intersection of their regions.

    Raises:
        ValueError: for an empty set.
    """
    it = iter(subgraphs)
    common = next(it, None)
    if common is None:
        raise ValueError("common_subgraph: needs at least one SubGraph, got none")
    for g in it:
        common = common.intersect(g)
    return common


def fetch_bytes(subnet: SubGraph, cached: SubGraph | None, bits: int = 8) -> int:
    """Bytes SubNet ``subnet`` must still fetch from off-chip memory when ``cached`` is on chip.

    ``= subnet.nbytes(bits) - (subnet ∩ cached).nbytes(bits)``; a cache holding regions the SubNet
    does not read saves nothing for it.
    """
    total = subnet.nbytes(bits)
    if cached is None or not len(cached):
        return total
    return total - subnet.intersect(cached).nbytes(bits)

"""``SearchSpace``: the named elastic dimensions of a SuperNet and their allowed choices.

Dimensions live at one of three levels, as in OFA:

* ``"net"``   — one value for the whole SubNet (``resolution``);
* ``"stage"`` — one value per stage (``depth``, ResNet's ``width``);
* ``"block"`` — one value per block slot (``kernel``, ``expand``). Block ``j`` of stage ``s`` runs
  only if ``j < base_depth[s] + depth[s]``; the canonical config holds ``None`` for skipped blocks,
  so every distinct SubNet has exactly one config (and ``size()`` counts distinct SubNets).

The stage-level dimension named ``"depth"`` gates blocks; a space without one has fixed depth. A stage
whose ``base_depth`` equals its block slots has fixed depth in a space with one (OFA ProxylessNAS's last
stage, a single block): all its blocks run and its ``depth`` entry is canonically ``None``, like the
settings of a skipped block.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .config import SubNetConfig

__all__ = ["Dimension", "SearchSpace"]

_LEVELS = ("net", "stage", "block")
DEPTH = "depth"


@dataclass(frozen=True)
class Dimension:
    """One elastic dimension: a name, its allowed choices (ascending) and its level."""

    name: str
    choices: tuple
    level: str = "block"

    def __post_init__(self) -> None:
        if self.level not in _LEVELS:
            raise ValueError(f"Dimension {self.name!r}: level must be one of {_LEVELS}, got {self.level!r}")
        choices = tuple(self.choices)
        if not choices:
            raise ValueError(f"Dimension {self.name!r}: needs at least one choice")
        if len(set(choices)) != len(choices):
            raise ValueError(f"Dimension {self.name!r}: duplicate choices in {choices}")
        object.__setattr__(self, "choices", tuple(sorted(choices)))
        object.__setattr__(self, "_index", {c: c for c in self.choices})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "choices": list(self.choices), "level": self.level}


_MISSING = object()


def _lookup(dim: Dimension, value: Any) -> Any:
    """The choice object equal to ``value`` (so 3.0 canonicalises to 3), or ``_MISSING``."""
    if type(value) is bool:  # True == 1, but a flag is not a layer setting
        return _MISSING
    try:
        return dim._index.get(value, _MISSING)
    except TypeError:  # unhashable
        return _MISSING


def _invalid(dim: Dimension, value: Any, where: str = "") -> ValueError:
    return ValueError(f"invalid SubNet config: dimension {dim.name!r}{where} allows {list(dim.choices)}, got {value!r}")


class SearchSpace:
    """The elastic dimensions of a SuperNet.

    Args:
        dimensions: the dimensions, in a fixed order (this order defines ``encode``).
        stage_blocks: number of block slots per stage (needed for stage/block dimensions).
        base_depth: blocks that always run per stage; block ``j`` runs iff
            ``j < base_depth[s] + depth[s]`` (OFA MobileNetV3: zeros; OFA ResNet: ``(2, 2, 4, 2)``). A stage
            with ``base_depth[s] == stage_blocks[s]`` has fixed depth: its ``depth`` entry is ``None``
            (OFA ProxylessNAS: ``(0, 0, 0, 0, 0, 1)`` with ``stage_blocks=(4, 4, 4, 4, 4, 1)``).

    Example::

        >>> space = SearchSpace(
        ...     [Dimension("depth", (1, 2), "stage"), Dimension("kernel", (3, 5), "block")],
        ...     stage_blocks=(2,),
        ... )
        >>> space.size()   # depth 1: 2 kernels; depth 2: 2 * 2 kernels
        6
        >>> space.validate({"depth": [1], "kernel": [5, 3]})["kernel"]   # skipped block -> None
        (5, None)
    """

    def __init__(
        self,
        dimensions: Sequence[Dimension],
        stage_blocks: Sequence[int] = (),
        base_depth: Sequence[int] | None = None,
    ) -> None:
        self.dimensions: tuple[Dimension, ...] = tuple(dimensions)
        names = [d.name for d in self.dimensions]
        if len(set(names)) != len(names):
            raise ValueError(f"SearchSpace: duplicate dimension names in {names}")
        self.stage_blocks = tuple(int(n) for n in stage_blocks)
        self.base_depth = tuple(int(b) for b in (base_depth or (0,) * len(self.stage_blocks)))
        if len(self.base_depth) != len(self.stage_blocks):
            raise ValueError(
                f"SearchSpace: base_depth has {len(self.base_depth)} entries for {len(self.stage_blocks)} stages"
            )
        if any(d.level != "net" for d in self.dimensions) and not self.stage_blocks:
            raise ValueError("SearchSpace: stage/block dimensions need stage_blocks")
        self._by_name = {d.name: d for d in self.dimensions}
        depth = self._by_name.get(DEPTH)
        if depth is not None:
            if depth.level != "stage":
                raise ValueError(f"SearchSpace: dimension 'depth' must be per stage, got level {depth.level!r}")
            for s, (b, n) in enumerate(zip(self.base_depth, self.stage_blocks)):
                if b != n and b + depth.choices[-1] > n:
                    raise ValueError(
                        f"SearchSpace: stage {s} has {n} block slots but base {b} + max depth {depth.choices[-1]}"
                    )
        # stages of fixed depth (all their blocks run; their depth entry is canonically None)
        self._fixed_depth = () if depth is None else tuple(b == n for b, n in zip(self.base_depth, self.stage_blocks))
        self._depth_active = [not f for f in self._fixed_depth] if any(self._fixed_depth) else None
        # block slot index -> (stage, position in stage)
        self._slots = [(s, j) for s, n in enumerate(self.stage_blocks) for j in range(n)]
        self._encoding_length = sum(self._length(d) * len(d.choices) for d in self.dimensions)

    # Structure ---------------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)

    def __getitem__(self, name: str) -> Dimension:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def _length(self, dim: Dimension) -> int:
        return {"net": 1, "stage": len(self.stage_blocks), "block": len(self._slots)}[dim.level]

    def active_blocks(self, cfg: Mapping[str, Any]) -> tuple[int, ...]:
        """Number of running blocks per stage under ``cfg``."""
        if DEPTH not in self._by_name:
            return self.stage_blocks
        return tuple(b if d is None else b + d for b, d in zip(self.base_depth, cfg[DEPTH]))

    def _block_active(self, depths: Sequence[int]) -> list[bool]:
        return [j < depths[s] for s, j in self._slots]

    # Canonical configs ---------------------------------------------------------------------------
    def validate(self, cfg: Mapping[str, Any] | SubNetConfig) -> SubNetConfig:
        """Check ``cfg`` and return its canonical :class:`SubNetConfig`.

        Raises ``ValueError`` naming the dimension, the allowed choices and the value received.
        Values for skipped blocks may be given (OFA's full lists) or ``None``; they are dropped.
        """
        if not isinstance(cfg, Mapping):
            raise TypeError(f"expected a SubNetConfig or a dict of dimensions, got {type(cfg).__name__}")
        unknown = sorted(set(cfg) - set(self._by_name))
        if unknown:
            raise ValueError(f"invalid SubNet config: unknown dimension(s) {unknown}; allowed {list(self.names)}")
        missing = [n for n in self.names if n not in cfg]
        if missing:
            raise ValueError(f"invalid SubNet config: missing dimension(s) {missing}; required {list(self.names)}")
        out: dict[str, Any] = {}
        for dim in self.dimensions:
            if dim.level == "net":
                value = _lookup(dim, cfg[dim.name])
                if value is _MISSING:
                    raise _invalid(dim, cfg[dim.name])
                out[dim.name] = value
        for dim in self.dimensions:
            if dim.level == "stage":
                active = self._depth_active if dim.name == DEPTH else None
                out[dim.name] = self._validate_vector(dim, cfg[dim.name], active)
        active = self._block_active(self.active_blocks(out)) if self._slots else []
        for dim in self.dimensions:
            if dim.level == "block":
                out[dim.name] = self._validate_vector(dim, cfg[dim.name], active)
        return SubNetConfig._from_frozen(out)  # every value is a choice object or a tuple of them

    def _validate_vector(self, dim: Dimension, values: Any, active: list[bool] | None) -> tuple:
        n = self._length(dim)
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ValueError(
                f"invalid SubNet config: dimension {dim.name!r} needs a list of {n} values "
                f"(one per {dim.level}), got {values!r}"
            )
        if len(values) != n:
            raise ValueError(
                f"invalid SubNet config: dimension {dim.name!r} needs {n} values (one per {dim.level}), "
                f"got {len(values)}"
            )
        out = []
        for i, v in enumerate(values):
            if active is not None and not active[i]:
                out.append(None)
                continue
            choice = _lookup(dim, v)
            if choice is _MISSING:
                if active is None or dim.level == "stage":
                    where = f"[{i}]"
                else:
                    where = f"[{i}] (stage {self._slots[i][0]}, block {self._slots[i][1]})"
                raise _invalid(dim, v, where)
            out.append(choice)
        return tuple(out)

    def is_valid(self, cfg: Mapping[str, Any]) -> bool:
        try:
            self.validate(cfg)
        except (ValueError, TypeError):
            return False
        return True

    # Special SubNets ---------------------------------------------------------------------------
    def _uniform(self, pick: int) -> SubNetConfig:
        full = {d.name: [d.choices[pick]] * self._length(d) for d in self.dimensions}
        for d in self.dimensions:
            if d.level == "net":
                full[d.name] = full[d.name][0]
        return self.validate(full)

    def max(self) -> SubNetConfig:
        """The largest SubNet: the last (largest) choice everywhere."""
        return self._uniform(-1)

    def min(self) -> SubNetConfig:
        """The smallest SubNet: the first (smallest) choice everywhere."""
        return self._uniform(0)

    # Random SubNets ----------------------------------------------------------------------------
    def _full_random(self, generator: torch.Generator | None) -> dict[str, list]:
        u = torch.rand(self._n_positions(), generator=generator, dtype=torch.float64).tolist()
        return self._from_uniforms(u)

    def _n_positions(self) -> int:
        return sum(self._length(d) for d in self.dimensions)

    def _from_uniforms(self, u: Sequence[float]) -> dict[str, list]:
        full: dict[str, list] = {}
        i = 0
        for d in self.dimensions:
            n, k = self._length(d), len(d.choices)
            full[d.name] = [d.choices[min(int(x * k), k - 1)] for x in u[i : i + n]]
            i += n
        return full

    def _collapse(self, full: dict[str, list]) -> SubNetConfig:
        cfg = {d.name: (full[d.name][0] if d.level == "net" else full[d.name]) for d in self.dimensions}
        return self.validate(cfg)

    def _expand(self, cfg: Mapping[str, Any], generator: torch.Generator | None) -> dict[str, list]:
        """Full per-position lists of ``cfg``, with skipped blocks filled by random choices."""
        full = self._full_random(generator)
        for d in self.dimensions:
            vals = [cfg[d.name]] if d.level == "net" else list(cfg[d.name])
            full[d.name] = [v if v is not None else r for v, r in zip(vals, full[d.name])]
        return full

    def sample(self, generator: torch.Generator | None = None) -> SubNetConfig:
        """A uniformly random choice per position (OFA's ``sample_active_subnet``)."""
        return self._collapse(self._full_random(generator))

    def mutate(
        self, cfg: Mapping[str, Any], prob: float = 0.1, generator: torch.Generator | None = None
    ) -> SubNetConfig:
        """Resample each position with probability ``prob`` (OFA ``arch_mutate_prob`` = 0.1)."""
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mutate: prob must be in [0, 1], got {prob}")
        full = self._expand(self.validate(cfg), generator)
        fresh = self._full_random(generator)
        coins = torch.rand(self._n_positions(), generator=generator, dtype=torch.float64).tolist()
        i = 0
        for d in self.dimensions:
            for j in range(self._length(d)):
                if coins[i] < prob:
                    full[d.name][j] = fresh[d.name][j]
                i += 1
        return self._collapse(full)

    def crossover(
        self, a: Mapping[str, Any], b: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> SubNetConfig:
        """Uniform crossover: each position comes from ``a`` or ``b`` with probability 1/2."""
        fa = self._expand(self.validate(a), generator)
        fb = self._expand(self.validate(b), generator)
        coins = torch.rand(self._n_positions(), generator=generator, dtype=torch.float64).tolist()
        i = 0
        for d in self.dimensions:
            for j in range(self._length(d)):
                if coins[i] >= 0.5:
                    fa[d.name][j] = fb[d.name][j]
                i += 1
        return self._collapse(fa)

    # Counting and encoding ---------------------------------------------------------------------
    def size(self) -> int:
        """Exact number of distinct SubNets (a Python int; ~2e19 for OFA MobileNetV3)."""
        total = 1
        for d in self.dimensions:
            if d.level == "net":
                total *= len(d.choices)
            elif d.level == "stage" and d.name != DEPTH:
                total *= len(d.choices) ** len(self.stage_blocks)
        per_block = math.prod(len(d.choices) for d in self.dimensions if d.level == "block")
        depth = self._by_name.get(DEPTH)
        for s, n in enumerate(self.stage_blocks):
            if depth is None or self._fixed_depth[s]:
                total *= per_block**n
            else:
                total *= sum(per_block ** (self.base_depth[s] + dv) for dv in depth.choices)
        return total

    @property
    def encoding_length(self) -> int:
        return self._encoding_length

    def encode(self, cfg: Mapping[str, Any]) -> torch.Tensor:
        """Fixed-length one-hot encoding (float32) for accuracy predictors.

        One one-hot group per position; skipped blocks are all zeros (OFA's ``MobileNetArchEncoder``).
        """
        cfg = self.validate(cfg)
        out = torch.zeros(self._encoding_length)
        i = 0
        for d in self.dimensions:
            vals = [cfg[d.name]] if d.level == "net" else cfg[d.name]
            k = len(d.choices)
            for v in vals:
                if v is not None:
                    out[i + d.choices.index(v)] = 1.0
                i += k
        return out

    # Serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "dimensions": [d.to_dict() for d in self.dimensions],
            "stage_blocks": list(self.stage_blocks),
            "base_depth": list(self.base_depth),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchSpace:
        dims = [Dimension(x["name"], tuple(x["choices"]), x["level"]) for x in d["dimensions"]]
        return cls(dims, d.get("stage_blocks", ()), d.get("base_depth"))

    @classmethod
    def from_json(cls, s: str) -> SearchSpace:
        return cls.from_dict(json.loads(s))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        dims = ", ".join(f"{d.name}[{d.level}]={list(d.choices)}" for d in self.dimensions)
        return f"SearchSpace({dims}; stage_blocks={list(self.stage_blocks)}, size={self.size():.3e})"

"""``SubNetConfig``: an immutable, hashable, JSON round-trippable description of one SubNet.

A config maps each elastic dimension of a :class:`~ws_core.space.SearchSpace` to its value: a
scalar for net-level dimensions (``resolution``), a tuple for per-stage (``depth``) and per-block
(``kernel``, ``expand``) dimensions. Blocks a SubNet skips carry ``None`` in the canonical form, so
two configs describe the same SubNet exactly when they are equal (and share an ``.id``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["SubNetConfig"]

Value = Any  # int | float | None | tuple[int | float | None, ...]


_PLAIN = frozenset({int, float, str, bool, type(None)})


def _freeze(value: Any) -> Value:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is tuple or kind is list:
        return tuple(v if type(v) in _PLAIN else _freeze(v) for v in value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, (int, float, str)):
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"SubNetConfig values must be numbers, None or sequences of them; got {type(value).__name__}")


def _thaw(value: Value) -> Any:
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


class SubNetConfig(Mapping):
    """One SubNet of a SuperNet: ``{dimension name: value}``.

    Example::

        >>> cfg = SubNetConfig({"depth": [2, 3], "kernel": [3, 5, None, 7, 7, 3, None, None]})
        >>> SubNetConfig.from_json(cfg.to_json()) == cfg
        True
        >>> len(cfg.id)
        12
    """

    __slots__ = ("_hash", "_id", "_items")

    def __init__(self, values: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        merged = dict(values or {}, **kwargs)
        for key in merged:
            if not isinstance(key, str):
                raise TypeError(f"SubNetConfig keys must be dimension names (str); got {key!r}")
        items = tuple(sorted((k, _freeze(v)) for k, v in merged.items()))
        object.__setattr__(self, "_items", items)
        object.__setattr__(self, "_hash", hash(items))
        object.__setattr__(self, "_id", None)

    @classmethod
    def _from_frozen(cls, values: dict[str, Value]) -> SubNetConfig:
        """Build from values that are already frozen (plain scalars / tuples of them); no copying."""
        self = cls.__new__(cls)
        items = tuple(sorted(values.items()))
        object.__setattr__(self, "_items", items)
        object.__setattr__(self, "_hash", hash(items))
        object.__setattr__(self, "_id", None)
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("SubNetConfig is immutable; use .replace(...) to derive a new one")

    # Mapping protocol -------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Value:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SubNetConfig):
            return self._hash == other._hash and self._items == other._items
        if isinstance(other, Mapping):
            return self == SubNetConfig(other)
        return NotImplemented

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={_thaw(v)!r}" for k, v in self._items)
        return f"SubNetConfig({body})"

    def __reduce__(self):
        return (SubNetConfig, (self.to_dict(),))

    # Derived views ----------------------------------------------------------------------------
    def replace(self, **changes: Any) -> SubNetConfig:
        """A copy with some dimensions changed."""
        return SubNetConfig(dict(self.to_dict(), **changes))

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` with lists for per-stage/per-block values (JSON-ready)."""
        return {k: _thaw(v) for k, v in self._items}

    def to_json(self, **kwargs: Any) -> str:
        """Canonical JSON (sorted keys, no whitespace unless ``indent`` is given)."""
        kwargs.setdefault("separators", (",", ":"))
        return json.dumps(self.to_dict(), sort_keys=True, **kwargs)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SubNetConfig:
        if not isinstance(d, Mapping):
            raise TypeError(f"SubNetConfig.from_dict expects a mapping; got {type(d).__name__}")
        return cls(d)

    @classmethod
    def from_json(cls, s: str) -> SubNetConfig:
        return cls.from_dict(json.loads(s))

    @property
    def id(self) -> str:
        """Short stable hash (12 hex digits) of the canonical JSON; equal configs share it across runs."""
        if self._id is None:
            digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:12]
            object.__setattr__(self, "_id", digest)
        return self._id

"""What travels between server and clients: the weight slices of one SubNet, and their checks.

A client receives, for every SuperNet tensor its SubNet reads, exactly the region
:meth:`ws_core.SuperNet.weight_slices` names (``{key: array}``), and sends back the same keys at the
same shapes. :func:`check_subnet_arrays` is the gate every reply passes before aggregation: wrong
keys, wrong shapes, non-numeric or non-finite values raise :class:`InvalidSubNetArrays` naming the
problem, so one bad client can never reach the global model.

Example::

    >>> import numpy as np
    >>> full = {"w": np.arange(12.0).reshape(3, 4)}
    >>> part = slice_arrays(full, {"w": (slice(0, 2), slice(0, 2))})
    >>> part["w"].tolist()
    [[0.0, 1.0], [4.0, 5.0]]
    >>> check_subnet_arrays(part, {"w": (2, 2)})
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["InvalidSubNetArrays", "check_subnet_arrays", "payload_nbytes", "region_shapes", "slice_arrays"]

Slices = tuple[slice, ...]


class InvalidSubNetArrays(ValueError):
    """SubNet arrays that do not match the SubNet they claim to be (keys, shapes or values)."""


def slice_arrays(arrays: Mapping[str, np.ndarray], slices: Mapping[str, Slices]) -> dict[str, np.ndarray]:
    """Contiguous copies of the regions ``slices`` of ``arrays`` (the payload sent to one client)."""
    missing = [k for k in slices if k not in arrays]
    if missing:
        raise KeyError(f"slice_arrays: no tensor for {missing[:5]}")
    return {k: np.array(np.asarray(arrays[k])[s], order="C", copy=True) for k, s in slices.items()}


def region_shapes(arrays: Mapping[str, np.ndarray], slices: Mapping[str, Slices]) -> dict[str, tuple[int, ...]]:
    """Shape of every region ``arrays[k][slices[k]]``, without copying."""
    return {k: tuple(np.asarray(arrays[k])[s].shape) for k, s in slices.items()}


def check_subnet_arrays(arrays: Mapping[str, np.ndarray], expected_shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Raise :class:`InvalidSubNetArrays` unless ``arrays`` has exactly the expected keys and shapes,
    a real numeric dtype, and only finite values."""
    keys, expected = set(arrays), set(expected_shapes)
    if keys != expected:
        missing, unexpected = sorted(expected - keys), sorted(keys - expected)
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) {unexpected[:3]}")
        raise InvalidSubNetArrays("wrong keys: " + ", ".join(parts))
    for key, shape in expected_shapes.items():
        arr = arrays[key]
        if not isinstance(arr, np.ndarray):
            raise InvalidSubNetArrays(f"{key!r}: expected a NumPy array, got {type(arr).__name__}")
        if tuple(arr.shape) != tuple(shape):
            raise InvalidSubNetArrays(f"{key!r}: expected shape {tuple(shape)}, got {tuple(arr.shape)}")
        if arr.dtype.kind not in "fiub":
            raise InvalidSubNetArrays(f"{key!r}: expected a real numeric dtype, got {arr.dtype}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = int(arr.size - np.isfinite(arr).sum())
            raise InvalidSubNetArrays(f"{key!r}: {bad} non-finite value(s)")


def payload_nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Bytes of the tensor data in a payload (what communication cost counts)."""
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))

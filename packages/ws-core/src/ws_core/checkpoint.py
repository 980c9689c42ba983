"""SuperNet checkpoints: safetensors for tensors, JSON (in the safetensors header) for the rest.

One ``.safetensors`` file holds the state dict and, as string metadata, the architecture name, the
search space and the active SubNet as JSON. Files are written atomically (temporary file in the same
folder, then ``os.replace``) and read without unpickling anything. Loading checks the search space,
every key and every shape *before* copying, so a corrupt or mismatched file raises
:class:`CheckpointError` and leaves the model untouched.

timm users can load the same file with
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import SubNetConfig
from .io import atomic_path
from .space import SearchSpace
from .supernet import SuperNet

__all__ = [
    "CheckpointError",
    "atomic_save_safetensors",
    "create_from_checkpoint",
    "load_checkpoint",
    "read_checkpoint_metadata",
    "read_safetensors",
    "save_checkpoint",
]

FORMAT = "weightshare.supernet/1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


def atomic_save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
                            metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` to ``path`` atomically: a reader sees the old file or the complete new one."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=dict(metadata or {}))
    return Path(path)


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; unreadable files raise :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    return tensors, metadata


def save_checkpoint(net: SuperNet, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """Save ``net``'s state dict with its architecture, search space and active SubNet as JSON metadata.

    ``extra`` (JSON-serialisable) is stored too and returned by :func:`read_checkpoint_metadata`.
    """
    cfg = getattr(net, "pretrained_cfg", None) or {}
    metadata = {
        "format": FORMAT,
        "architecture": str(cfg.get("architecture") or type(net).__name__),
        "num_classes": str(getattr(net, "num_classes", "")),
        "space": net.space.to_json(),
        "active": net.active.to_json(),
        "extra": json.dumps(dict(extra or {}), sort_keys=True),
    }
    return atomic_save_safetensors(net.state_dict(), path, metadata)


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of a ws-core checkpoint (``space`` as a :class:`SearchSpace`, etc.)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    return _decode_metadata(path, raw)


def _decode_metadata(path: Path, raw: Mapping[str, str]) -> dict[str, Any]:
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a weightshare SuperNet checkpoint (format={raw.get('format')!r}, "
                              f"expected {FORMAT!r})")
    try:
        return {
            "format": raw["format"],
            "architecture": raw.get("architecture", ""),
            "num_classes": int(raw["num_classes"]) if raw.get("num_classes") else None,
            "space": SearchSpace.from_json(raw["space"]),
            "active": SubNetConfig.from_json(raw["active"]),
            "extra": json.loads(raw.get("extra", "{}")),
        }
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({e})") from e


def load_checkpoint(net: SuperNet, path: str | os.PathLike, strict: bool = True) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into ``net``; returns its metadata.

    Raises :class:`CheckpointError` — with the model untouched — if the file is unreadable, is not a
    weightshare checkpoint, has a different search space, or has missing/unexpected/mis-shaped tensors.
    The active SubNet of the checkpoint is activated.
    """
    path = Path(path)
    tensors, raw = read_safetensors(path)
    meta = _decode_metadata(path, raw)
    if meta["space"] != net.space:
        raise CheckpointError(
            f"{path}: search space differs from the model's\n"
            f"  checkpoint: {meta['space']!r}\n  model:      {net.space!r}"
        )
    try:
        net.load_state_dict(tensors, strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: {e}") from e
    net.activate(meta["active"])
    return meta


def create_from_checkpoint(path: str | os.PathLike, **overrides: Any) -> SuperNet:
    """The SuperNet a checkpoint was saved from: ``timm.create_model`` of its architecture with its
    ``num_classes`` (``overrides`` are passed on and win, e.g. ``resolutions=(28,)`` for a SuperNet built
    with a non-default space), then :func:`load_checkpoint`. Raises :class:`CheckpointError` for a file
    that is not a ws-core checkpoint or whose architecture is not registered (naming the registered ones).

    Example::

        >>> net = create_from_checkpoint("runs/demo/supernet.safetensors")   # doctest: +SKIP
    """
    import timm

    meta = read_checkpoint_metadata(path)
    architecture = meta["architecture"]
    registered = timm.list_models("ws_*")
    if architecture not in registered:
        raise CheckpointError(f"{path}: architecture {architecture!r} is not a registered SuperNet "
                              f"(registered: {registered})")
    kwargs: dict[str, Any] = {} if meta["num_classes"] is None else {"num_classes": meta["num_classes"]}
    kwargs.update(overrides)
    net = timm.create_model(architecture, **kwargs)
    load_checkpoint(net, path)
    return net

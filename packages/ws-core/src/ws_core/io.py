"""Atomic file and folder writes: a reader sees the old content or the complete new one, never a half.

Every weightshare package writes its files through these helpers (JSON reports, served-set files,
checkpoints, converted data sets):

* :func:`atomic_path` — a temporary path in the target's folder, moved onto the target with
  ``os.replace`` when the block succeeds and removed when it fails (the primitive of the others);
* :func:`atomic_write_text` / :func:`atomic_write_bytes` / :func:`atomic_write_json` — whole files;
* :func:`atomic_directory` — a whole folder, built in a temporary sibling and renamed into place.

Example::

    >>> from ws_core.io import atomic_write_json
    >>> atomic_write_json("runs/summary.json", {"accuracy": 0.93})  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_directory", "atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


def _new_temporary(path: Path, suffix: str = ".tmp", folder: bool = False) -> Path:
    """Create an empty, unique file (or ``folder``) next to ``path``, named ``.<name>.<random><suffix>``,
    with the permissions ``open``/``mkdir`` give (0o666 / 0o777 less the umask) — ``tempfile.mkstemp``
    and ``mkdtemp`` would give 0o600 / 0o700, which the renamed result would keep."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")
        try:
            if folder:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name next to {path}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` (``os.replace``, after fsync).

    The parent folder is created if needed. If the block raises (or is interrupted), the temporary
    file is removed and ``path`` is left as it was.

    Example::

        >>> with atomic_path("model.safetensors") as tmp:   # doctest: +SKIP
        ...     save_file(tensors, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary(path)
    mode = tmp.stat().st_mode & 0o7777  # 0o666 less the umask
    try:
        yield tmp
        os.chmod(tmp, mode)  # a writer that re-creates the file (safetensors: 0o600) gets the umask's mode back
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1,
                      default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``obj`` as JSON (``json.dumps(obj, indent=indent, default=default)``) atomically; returns ``path``.

    The text is built before the file is touched, so an object that cannot be serialised raises
    ``TypeError`` and leaves ``path`` as it was.
    """
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=default) + "\n")


@contextmanager
def atomic_directory(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it is renamed to ``path``.

    If the block raises (or is interrupted), the temporary folder and everything in it is removed (and
    the parent folders made for it, if still empty) and ``path`` is untouched: a killed or failed writer
    leaves no half-written folder behind. The temporary folder is a hidden sibling
    (``.<name>.<random>.tmp``), so the final rename stays on one file system.

    Args:
        path: the folder to create.
        replace: if ``path`` already exists, move it aside and remove it once the new folder is in place
            (``False``: raise ``FileExistsError`` before anything is written).
    """
    path = Path(path)
    if path.exists() and not replace:
        raise FileExistsError(f"{path} already exists; pass replace=True to replace it")
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary(path, folder=True)
    try:
        yield tmp
        old = None
        if path.exists():
            old = _new_temporary(path, ".old", folder=True)
            os.replace(path, old / path.name)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:  # put the previous folder back
                os.replace(old / path.name, path)
                old.rmdir()
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in created:  # the folders made for it, innermost first, if still empty
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise

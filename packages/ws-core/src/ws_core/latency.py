"""Per-block latency look-up tables: measure each distinct block once per device, predict any SubNet.

Once-for-all's ``LatencyTable`` keys the latency of each MobileNetV3 block by its shape (input size,
channels, expansion, kernel, stride) and predicts a SubNet's latency as the sum over its blocks; a
search can then rank thousands of SubNets it never ran. :class:`BlockLatencyTable` does the same for
any ws-core SuperNet, convolutional or transformer:

* the **blocks** of a SubNet are the modules its extracted form runs one after the other — the
  extracted SubNet's children with every ``nn.Sequential`` opened up (stem layers, each MBConv /
  bottleneck / transformer block, the head); two blocks are the same entry when their structure
  (``repr``: types, channels, kernels, strides, ...) and their input shape are the same;
* :meth:`BlockLatencyTable.measure` times every block of the given SubNets **not yet in the table**
  (``warmup`` untimed runs, then the minimum over ``rounds`` of the median of ``repeats``), per batch
  size, on one device, in eval mode — so a table for 50 SubNets costs a few hundred block timings, not
  50 SubNet profiles;
* :meth:`BlockLatencyTable.predict` sums the block entries of a SubNet (``KeyError`` naming the
  missing blocks if some were never measured); a SuperNet with elastic resolution first resizes its
  input, which the prediction leaves out (one interpolation);
* tables are JSON keyed by device (:meth:`save` / :meth:`load`, atomic writes), so one file holds the
  tables of several devices.

The sum leaves out what lies between blocks in a whole forward (Python dispatch, caching effects), so
predicted and measured latency differ by a roughly constant factor; what a search needs is the ranking.
``benchmarks/latency_table.py`` reports both (rank correlation and mean relative error) for random
SubNets.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import SubNetConfig
from .cost import input_hw
from .io import atomic_write_json
from .supernet import SuperNet

__all__ = ["Block", "BlockLatencyTable", "device_key", "subnet_blocks"]


@dataclass(frozen=True)
class Block:
    """One block of a SubNet: its table key, a readable kind, its input shape (without the batch) and the module."""

    key: str
    kind: str
    input_shape: tuple[int, ...]
    module: nn.Module = field(compare=False, repr=False)


def _units(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [u for child in module for u in _units(child)]
    return [module]


def subnet_blocks(net: SuperNet, config: Mapping[str, Any] | SubNetConfig,
                  input_size: Sequence[int] | int | None = None) -> list[Block]:
    """The blocks of SubNet ``config`` (see module doc), in forward order, with their input shapes.

    The SubNet is extracted (a copy) and run once on a zero batch of one with hooks on its blocks, so the
    shapes are the ones its forward really sees."""
    cfg = net.space.validate(config)
    sub = net.extract(cfg).eval()
    units = [u for child in sub.children() for u in _units(child)]
    shapes: dict[int, tuple[int, ...]] = {}

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], torch.Tensor) and id(module) not in shapes:
            shapes[id(module)] = tuple(args[0].shape[1:])

    handles = [u.register_forward_pre_hook(hook) for u in units]
    try:
        hw = input_hw(net, cfg, input_size)
        with torch.inference_mode():
            sub(torch.zeros(1, getattr(net, "in_chans", 3), *hw))
    finally:
        for h in handles:
            h.remove()
    blocks = []
    for u in units:
        if id(u) not in shapes:  # not run by the forward (e.g. an identity left out): no cost
            continue
        text = f"{u!r}|{shapes[id(u)]}"
        blocks.append(Block(hashlib.sha1(text.encode()).hexdigest()[:16], type(u).__name__, shapes[id(u)], u))
    return blocks


def device_key(device: torch.device | str) -> str:
    """How a device is named in a table file: ``cpu:<processor>:<threads> threads`` or ``cuda:<name>``."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}:{torch.get_num_threads()} threads"


@dataclass
class BlockLatencyTable:
    """Median latency in ms of each measured block, per batch size, on one device (see module doc).

    ``entries[key][str(batch)]`` is the latency; ``kinds[key]`` and ``shapes[key]`` say what the block is.
    """

    device: str
    entries: dict[str, dict[str, float]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    _block_keys: dict[tuple[int, str, Any], list[tuple[str, str, tuple[int, ...]]]] = field(
        default_factory=dict, repr=False, compare=False)  # (net, SubNet id, input size) -> its blocks

    def _blocks(self, net: SuperNet, config: Any, input_size: Any) -> list[tuple[str, str, tuple[int, ...]]]:
        cfg = net.space.validate(config)
        cache_key = (id(net), cfg.id, input_size if not isinstance(input_size, list) else tuple(input_size))
        if cache_key not in self._block_keys:
            self._block_keys[cache_key] = [(b.key, b.kind, b.input_shape)
                                           for b in subnet_blocks(net, cfg, input_size)]
        return self._block_keys[cache_key]

    def __len__(self) -> int:
        return len(self.entries)

    def measure(self, net: SuperNet, configs: Iterable[Mapping[str, Any] | SubNetConfig],
                batch_sizes: Sequence[int] = (1,), *, device: torch.device | str = "cpu",
                input_size: Sequence[int] | int | None = None,
                warmup: int = 3, repeats: int = 10, rounds: int = 2, timer: Callable[[], float] = time.perf_counter,
                progress: Callable[[str], None] | None = None) -> int:
        """Time the blocks of ``configs`` that the table lacks (at each of ``batch_sizes``) on ``device`` —
        the device this table is for (:attr:`device` names it); returns how many (block, batch size)
        entries were added."""
        if warmup < 0 or repeats < 1 or rounds < 1:
            raise ValueError(f"measure: need warmup >= 0, repeats >= 1, rounds >= 1; got {warmup}, {repeats}, "
                             f"{rounds}")
        if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
            raise ValueError(f"measure: batch sizes must be >= 1, got {list(batch_sizes)}")
        device = torch.device(device)
        todo: dict[tuple[str, int], Block] = {}
        for cfg in configs:
            for block in subnet_blocks(net, cfg, input_size):
                for b in batch_sizes:
                    if str(int(b)) not in self.entries.get(block.key, {}):
                        todo.setdefault((block.key, int(b)), block)
        best: dict[tuple[str, int], float] = {}
        for r in range(rounds):
            for n, ((key, b), block) in enumerate(todo.items()):
                if progress is not None and n % 50 == 0:
                    progress(f"timing block {n + 1}/{len(todo)}, round {r + 1}/{rounds}")
                module = block.module.to(device).eval()
                x = torch.randn(b, *block.input_shape, device=device)
                times = []
                with torch.inference_mode():
                    for k in range(warmup + repeats):
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        t0 = timer()
                        module(x)
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        if k >= warmup:
                            times.append((timer() - t0) * 1e3)
                median = statistics.median(times)
                best[(key, b)] = min(median, best.get((key, b), math.inf))
        for (key, b), block in todo.items():
            self.entries.setdefault(key, {})[str(b)] = best[(key, b)]
            self.kinds[key] = block.kind
            self.shapes[key] = list(block.input_shape)
        return len(todo)

    def predict(self, net: SuperNet, config: Mapping[str, Any] | SubNetConfig, batch_size: int = 1,
                input_size: Sequence[int] | int | None = None) -> float:
        """Predicted latency (ms) of SubNet ``config`` at ``batch_size``: the sum of its blocks' entries."""
        blocks = self._blocks(net, config, input_size)
        missing = [f"{kind}{list(shape)}" for key, kind, shape in blocks
                   if str(batch_size) not in self.entries.get(key, {})]
        if missing:
            raise KeyError(f"{len(missing)} block(s) of this SubNet were never measured at batch {batch_size} on "
                           f"{self.device}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; "
                           f"call measure() first")
        return sum(self.entries[key][str(batch_size)] for key, _, _ in blocks)

    def as_cost(self, net: SuperNet, batch_size: int = 1, *, device: torch.device | str = "cpu",
                input_size: Sequence[int] | int | None = None, **measure_kwargs: Any) -> Callable[[Any], float]:
        """A ``cost(config) -> ms`` for :func:`ws_core.search.evolutionary_search` / ``pareto_search``: the
        predicted latency, timing (:meth:`measure`, with ``measure_kwargs``) the blocks of a SubNet the table
        lacks the first time one is asked for — a latency for SubNets nobody profiled.

        Example::

            >>> table = BlockLatencyTable(device_key("cpu"))                       # doctest: +SKIP
            >>> evolutionary_search(net.space, accuracy, table.as_cost(net), constraint=5.0)
        """
        def cost(config: Any) -> float:
            try:
                return self.predict(net, config, batch_size, input_size)
            except KeyError:
                self.measure(net, [config], (batch_size,), device=device, input_size=input_size, **measure_kwargs)
                return self.predict(net, config, batch_size, input_size)

        return cost

    # Files ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"entries": self.entries, "kinds": self.kinds, "shapes": self.shapes}

    def save(self, path: str | os.PathLike) -> Path:
        """Store this table under its device in the JSON file ``path`` (other devices' tables are kept)."""
        path = Path(path)
        tables = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(tables, dict):
            raise ValueError(f"{path}: not a latency-table file (expected a JSON object keyed by device)")
        tables[self.device] = self.to_dict()
        return atomic_write_json(path, tables, indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str) -> BlockLatencyTable:
        """The table of ``device`` (a :func:`device_key`) in ``path``; an empty table if it has none."""
        tables = json.loads(Path(path).read_text())
        if not isinstance(tables, dict):
            raise ValueError(f"{path}: not a latency-table file (expected a JSON object keyed by device)")
        data = tables.get(device)
        if data is None:
            return cls(device)
        return cls(device, {k: {b: float(v) for b, v in row.items()} for k, row in data["entries"].items()},
                   dict(data.get("kinds", {})), {k: list(v) for k, v in data.get("shapes", {}).items()})

"""Hardware profiles: the parameters of the accelerator cost model, as JSON files.

A :class:`HardwareProfile` describes one SushiAccel-style device: a MAC array at a clock, an on-chip
weight buffer that holds the cached SubGraph, an off-chip memory interface, and energies per MAC,
per on-chip byte and per off-chip byte. Every value is a *model parameter*, not a measurement: each
profile lists its ``sources`` (datasheets, published energy tables) and the ``assumptions`` that turn
them into numbers. Built-in profiles ship in ``ws_sushi/profiles/``:

* ``zcu104`` — a ZCU104-class FPGA (Zynq UltraScale+ XCZU7EV): a 1,296-MAC array at 200 MHz, 2.25 MiB
  of UltraRAM for cached weights, weights streamed from PS DDR4 through one 128-bit AXI HP port;
* ``mcu_m7`` — a microcontroller-class device (STM32H7-class Cortex-M7 at 480 MHz): 256 KiB of SRAM
  for cached weights, weights read from external Octo-SPI memory.

Example::

    >>> profile = load_profile("zcu104")
    >>> profile.macs_per_second
    155520000000.0
    >>> sorted(list_profiles())
    ['mcu_m7', 'zcu104']
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from ws_core.io import atomic_write_text

__all__ = ["HardwareProfile", "list_profiles", "load_profile"]


@dataclass(frozen=True)
class HardwareProfile:
    """Parameters of the accelerator cost model (see :class:`ws_sushi.accel.SushiAccel`).

    Attributes:
        name: short identifier.
        clock_hz: accelerator clock.
        macs_per_cycle: peak multiply-accumulates per cycle of the MAC array.
        mac_utilization: average fraction of the peak the array sustains on these layers, in (0, 1].
        weight_buffer_bytes: on-chip memory reserved for the cached SubGraph.
        offchip_bandwidth_bytes_per_s: sustained off-chip bandwidth for weight fetches.
        energy_pj_per_mac: energy of one MAC.
        energy_pj_per_onchip_byte: energy to read one weight byte from on-chip memory.
        energy_pj_per_offchip_byte: energy to fetch one byte from off-chip memory.
        overlap_fetch: ``True`` when weight fetches are double-buffered behind compute (a layer takes
            ``max(compute, fetch)``), ``False`` when they stall it (``compute + fetch``).
        weight_bits: default weight bit-width.
        layer_overhead_cycles: fixed cycles per layer (configuration, pipeline fill).
        kind: ``"fpga"``, ``"mcu"``, ... (informative).
        description: one line.
        sources: where the numbers come from.
        assumptions: how the sources were turned into these numbers.
    """

    name: str
    clock_hz: float
    macs_per_cycle: float
    mac_utilization: float
    weight_buffer_bytes: int
    offchip_bandwidth_bytes_per_s: float
    energy_pj_per_mac: float
    energy_pj_per_onchip_byte: float
    energy_pj_per_offchip_byte: float
    overlap_fetch: bool = True
    weight_bits: int = 8
    layer_overhead_cycles: int = 0
    kind: str = ""
    description: str = ""
    sources: tuple[str, ...] = field(default_factory=tuple)
    assumptions: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        positive = ("clock_hz", "macs_per_cycle", "offchip_bandwidth_bytes_per_s")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value > 0):
                raise ValueError(f"HardwareProfile {self.name!r}: {name} must be a finite number > 0, got {value!r}")
        for name in ("energy_pj_per_mac", "energy_pj_per_onchip_byte", "energy_pj_per_offchip_byte"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value >= 0):
                raise ValueError(f"HardwareProfile {self.name!r}: {name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.mac_utilization, (int, float)) and 0 < self.mac_utilization <= 1):
            raise ValueError(
                f"HardwareProfile {self.name!r}: mac_utilization must be in (0, 1], got {self.mac_utilization!r}")
        for name in ("weight_buffer_bytes", "layer_overhead_cycles"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"HardwareProfile {self.name!r}: {name} must be an int >= 0, got {value!r}")
        bits = self.weight_bits
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
            raise ValueError(f"HardwareProfile {self.name!r}: weight_bits must be an int in [1, 32], got "
                             f"{self.weight_bits!r}")
        if not isinstance(self.overlap_fetch, bool):
            raise ValueError(f"HardwareProfile {self.name!r}: overlap_fetch must be true or false, "
                             f"got {self.overlap_fetch!r}")
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "assumptions", tuple(self.assumptions))

    @property
    def macs_per_second(self) -> float:
        """Sustained MAC rate: ``clock × macs_per_cycle × mac_utilization``."""
        return self.clock_hz * self.macs_per_cycle * self.mac_utilization

    def replace(self, **changes: Any) -> HardwareProfile:
        """A copy with some parameters changed (validated again)."""
        return HardwareProfile(**{**asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sources"], d["assumptions"] = list(self.sources), list(self.assumptions)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HardwareProfile:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"hardware profile: unknown keys {unknown}; allowed keys are {sorted(known)}")
        required = {"name", "clock_hz", "macs_per_cycle", "mac_utilization", "weight_buffer_bytes",
                    "offchip_bandwidth_bytes_per_s", "energy_pj_per_mac", "energy_pj_per_onchip_byte",
                    "energy_pj_per_offchip_byte"}
        missing = sorted(required - set(d))
        if missing:
            raise ValueError(f"hardware profile {d.get('name', '?')!r}: missing keys {missing}")
        return cls(**dict(d))

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.to_json(indent=2))


def _builtin_dir():
    return resources.files("ws_sushi") / "profiles"


def list_profiles() -> list[str]:
    """Names of the built-in hardware profiles."""
    return sorted(p.name[:-5] for p in _builtin_dir().iterdir() if p.name.endswith(".json"))


def load_profile(name_or_path: str | os.PathLike | HardwareProfile) -> HardwareProfile:
    """A built-in profile by name (``"zcu104"``, ``"mcu_m7"``) or a profile JSON file by path.

    Raises:
        ValueError: for an unknown name (listing the built-in ones) or an invalid file.
    """
    if isinstance(name_or_path, HardwareProfile):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".json") or path.is_file():
        if not path.is_file():
            raise ValueError(f"hardware profile file {text!r} does not exist")
        with open(path) as f:
            data = json.load(f)
    else:
        builtin = list_profiles()
        if text not in builtin:
            raise ValueError(f"unknown hardware profile {text!r}; built-in profiles are {builtin}, "
                             f"or pass the path of a profile JSON file")
        data = json.loads((_builtin_dir() / f"{text}.json").read_text())
    if not isinstance(data, Mapping):
        raise ValueError(f"hardware profile {text!r}: expected a JSON object, got {type(data).__name__}")
    return HardwareProfile.from_dict(data)

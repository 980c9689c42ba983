"""BitOps and model size of (mixed-precision) networks.

One forward at the given input size records, for every ``nn.Conv2d`` and ``nn.Linear``, its MACs per
sample (``weight.numel() × output positions``). A layer's BitOps are ``MACs × weight bits × act
bits``: quantized layers use their ``weight_bit_width`` / ``act_bit_width`` (precision mixtures their
expected bits), float layers count as 32 × 32. Two totals are reported:

* ``bitops`` — every conv and linear layer (the float stem and classifier at 32 × 32);
* ``cell_bitops`` — the layers inside the cells (``cells.*``), the ∇QDARTS convention (its BitOps
  skip the float stem and classifier); compare it with the same figure of the fp32 network.

:func:`bitops_breakdown` splits the whole-network count into stem + cells + head, so a headline
reduction measured on the cells alone can be shown next to the whole network's.

Model size is the parameter storage in bits: quantized weights at their bit-width, every other
parameter (stem, BN affine, classifier, biases) at 32 bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .quant import MixedQuantConv2d

__all__ = ["BitOpsBreakdown", "CostReport", "LayerCost", "bitops_breakdown", "cost_report", "layer_costs"]

FLOAT_BITS = 32


@dataclass(frozen=True)
class LayerCost:
    name: str
    macs: int
    weight_bits: float
    act_bits: float
    params: int

    @property
    def bitops(self) -> float:
        return self.macs * self.weight_bits * self.act_bits


@dataclass(frozen=True)
class CostReport:
    """Totals per sample (see the module docstring)."""

    macs: int
    bitops: float
    cell_macs: int
    cell_bitops: float
    model_size_bits: float
    params: int
    mean_weight_bits: float  # MAC-weighted over the cell layers
    mean_act_bits: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bits(module: nn.Module) -> tuple[float, float]:
    if isinstance(module, MixedQuantConv2d):
        return float(module.expected_weight_bits()), float(module.expected_act_bits())
    w = getattr(module, "weight_bit_width", None)
    a = getattr(module, "act_bit_width", None)
    return float(FLOAT_BITS if w is None else w), float(FLOAT_BITS if a is None else a)


@torch.no_grad()
def layer_costs(model: nn.Module, input_size: int | Sequence[int], in_chans: int | None = None) -> list[LayerCost]:
    """MACs and bit-widths of every conv / linear layer that runs in one forward at ``input_size``."""
    hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)[-2:]
    in_chans = in_chans or getattr(model, "in_chans", 3)
    found: dict[str, LayerCost] = {}
    hooks = []

    def record(name: str):
        def hook(module, inputs, output):
            positions = output.numel() // (output.shape[0] * output.shape[1])
            w, a = _bits(module)
            macs = module.weight.numel() * positions
            prev = found.get(name)
            found[name] = LayerCost(name, macs + (prev.macs if prev else 0), w, a, module.weight.numel())
        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(record(name)))
    ref = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, in_chans, *hw, device=ref.device, dtype=ref.dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return list(found.values())


def _model_size_bits(model: nn.Module) -> tuple[float, int]:
    arch = set()
    if hasattr(model, "arch_parameters"):
        arch = {id(p) for p in model.arch_parameters()}
    size, count = 0.0, 0
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in arch or pname.startswith("gamma_"):
                continue
            bits = FLOAT_BITS
            if pname == "weight" and isinstance(module, (nn.Conv2d, nn.Linear)):
                bits = _bits(module)[0]
            size += p.numel() * bits
            count += p.numel()
    return size, count


def cost_report(model: nn.Module, input_size: int | Sequence[int], in_chans: int | None = None,
                cell_prefix: str = "cells.") -> CostReport:
    """BitOps, MACs and model size of ``model`` for one sample at ``input_size`` (H, W).

    Example::

        >>> report = cost_report(net, (8, 8))                  # doctest: +SKIP
        >>> report.bitops, report.model_size_bits              # doctest: +SKIP
    """
    layers = layer_costs(model, input_size, in_chans)
    cells = [lc for lc in layers if lc.name.startswith(cell_prefix)]
    cell_macs = sum(lc.macs for lc in cells)
    size, count = _model_size_bits(model)
    return CostReport(
        macs=sum(lc.macs for lc in layers),
        bitops=sum(lc.bitops for lc in layers),
        cell_macs=cell_macs,
        cell_bitops=sum(lc.bitops for lc in cells),
        model_size_bits=size,
        params=count,
        mean_weight_bits=sum(lc.macs * lc.weight_bits for lc in cells) / cell_macs if cell_macs else float("nan"),
        mean_act_bits=sum(lc.macs * lc.act_bits for lc in cells) / cell_macs if cell_macs else float("nan"),
    )


@dataclass(frozen=True)
class BitOpsBreakdown:
    """Whole-network BitOps per sample, split by where the layers sit.

    Attributes:
        stem: the layers under ``stem.`` (float in ∇QDARTS: 32 × 32 bits).
        cells: the layers under ``cells.`` — the ∇QDARTS headline figure.
        head: every other layer (the classifier; an auxiliary head if any).
    """

    stem: float
    cells: float
    head: float

    @property
    def total(self) -> float:
        """The whole network: stem + cells + head."""
        return self.stem + self.cells + self.head

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}


def bitops_breakdown(model: nn.Module, input_size: int | Sequence[int], in_chans: int | None = None,
                     stem_prefix: str = "stem.", cell_prefix: str = "cells.") -> BitOpsBreakdown:
    """BitOps of the whole network (stem + cells + head) for one sample at ``input_size``.

    Every conv / linear layer that runs counts ``MACs × weight bits × activation bits`` (float layers at
    32 × 32, :func:`layer_costs`); layers are assigned by name: ``stem_prefix``, ``cell_prefix``, the rest
    is the head. ``total`` equals :func:`cost_report`'s ``bitops``, ``cells`` its ``cell_bitops``.

    Example::

        >>> b = bitops_breakdown(net, 32)                      # doctest: +SKIP
        >>> b.cells / b.total                                  # doctest: +SKIP
    """
    stem = cells = head = 0.0
    for lc in layer_costs(model, input_size, in_chans):
        if lc.name.startswith(stem_prefix):
            stem += lc.bitops
        elif lc.name.startswith(cell_prefix):
            cells += lc.bitops
        else:
            head += lc.bitops
    return BitOpsBreakdown(stem, cells, head)

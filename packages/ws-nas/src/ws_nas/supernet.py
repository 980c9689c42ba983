"""The DARTS cell SuperNet with ∇QDARTS precision mixtures.

:class:`CellSuperNet` is the DARTS search network: a float stem, ``layers`` cells (reduction cells at
1/3 and 2/3 of the depth, channels doubled there), global pooling and a float classifier. A cell is a
DAG of two input nodes (the outputs of the two previous cells, each through a 1×1 ReLU-Conv-BN or a
FactorizedReduce), ``steps`` intermediate nodes and the concatenation of the last ``multiplier``
nodes; every edge is a :class:`MixedOp` ``Σ_o softmax(α)_o · o(x)`` over the candidate operations.
``α`` is shared by all cells of one type (``alphas_normal``, ``alphas_reduce``).

Options:

* **precision mixtures** (``bits=(2, 4)`` or ``(2, 4, 8)``): every convolution of every cell is a
  :class:`~ws_nas.quant.MixedQuantConv2d` with its own ``γ_weight``/``γ_act`` over the bit-widths,
  all bit-widths quantizing the same full-precision weight. ``bits=None`` gives float convolutions
  (plain DARTS); a single bit-width, e.g. ``bits=(4,)``, gives fixed-precision convolutions (DARTS
  with bits fixed).
* **partial channels** (PC-DARTS, ``partial_channels=K``): only ``1/K`` of the channels go through
  the operations of an edge, the rest bypass it (max-pooled on reduction edges), then channel shuffle.
* **edge normalisation** (PC-DARTS, ``edge_normalization=True``): per-edge logits ``β``; each node sums
  its inputs weighted by ``softmax(β)`` over its incoming edges.

The stem and classifier stay float, as in ∇QDARTS; the ``none`` operation contributes exactly zero
and is not evaluated.

Parameter groups: :meth:`CellSuperNet.weight_parameters` (network weights ``w``),
:meth:`~CellSuperNet.precision_parameters` (``γ``), :meth:`~CellSuperNet.arch_parameters`
(``α``, ``β``).

Example::

    >>> net = CellSuperNet(num_classes=10, C=8, layers=3, in_chans=1, bits=(2, 4))
    >>> net.trace((8, 8))                        # records the MACs of every mixed convolution
    >>> net.complexity().item() > 0
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .genotype import Bits, CellPrecision, Genotype, derive_cell, edge_weights, num_edges
from .operations import (
    PRIMITIVES,
    ConvFactory,
    FactorizedReduce,
    ReLUConvBN,
    build_op,
    check_primitives,
    conv_layers,
    float_conv,
)
from .quant import MixedQuantConv2d, QuantConv2d, check_bits

__all__ = ["CellSuperNet", "MixedOp", "SearchCell", "channel_shuffle", "conv_factory", "reduction_layers"]


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet channel shuffle (PC-DARTS): interleave ``groups`` channel groups."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def reduction_layers(layers: int) -> set[int]:
    """Indices of the reduction cells: ``layers // 3`` and ``2 * layers // 3`` (DARTS)."""
    return {layers // 3, 2 * layers // 3}


def conv_factory(bits: Sequence[int] | None, gamma_init_std: float = 1e-3) -> ConvFactory:
    """The convolution of the search cells: float, fixed bit-width, or a precision mixture."""
    if bits is None:
        return float_conv
    bits = check_bits(bits)
    if len(bits) == 1:
        return partial(QuantConv2d, weight_bit_width=bits[0], act_bit_width=bits[0])
    return partial(MixedQuantConv2d, weight_bits=bits, act_bits=bits, gamma_init_std=gamma_init_std)


class MixedOp(nn.Module):
    """One edge: ``Σ_o w_o · o(x)`` over the candidate operations, optionally on 1/K of the channels."""

    def __init__(self, C: int, stride: int, primitives: Sequence[str], conv: ConvFactory, partial_channels: int = 1):
        super().__init__()
        self.primitives = tuple(primitives)
        self.stride = stride
        self.k = partial_channels
        c = C // partial_channels
        self.ops = nn.ModuleList()
        for p in self.primitives:
            op = build_op(p, c, stride, conv, affine=False)
            if "pool" in p:
                op = nn.Sequential(op, nn.BatchNorm2d(c, affine=False))
            self.ops.append(op)
        self._active = [i for i, p in enumerate(self.primitives) if p != "none"]

    def op(self, name: str) -> nn.Module:
        return self.ops[self.primitives.index(name)]

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        if self.k == 1:
            return sum(weights[i] * self.ops[i](x) for i in self._active)
        c = x.shape[1] // self.k
        xa, xb = x[:, :c], x[:, c:]
        y = sum(weights[i] * self.ops[i](xa) for i in self._active)
        if self.stride != 1:
            xb = F.max_pool2d(xb, 2, 2)
        return channel_shuffle(torch.cat([y, xb], dim=1), self.k)


class SearchCell(nn.Module):
    """A DARTS search cell: two preprocessed inputs, ``steps`` nodes, every edge a :class:`MixedOp`."""

    def __init__(self, steps: int, multiplier: int, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, primitives: Sequence[str], conv: ConvFactory, partial_channels: int = 1):
        super().__init__()
        self.reduction = reduction
        self.steps = steps
        self.multiplier = multiplier
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, conv, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, conv, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, conv, affine=False)
        self.edges = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(MixedOp(C, stride, primitives, conv, partial_channels))

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, edge_w: Tensor | None = None) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            terms = []
            for j, h in enumerate(states):
                y = self.edges[offset + j](h, weights[offset + j])
                terms.append(y if edge_w is None else edge_w[offset + j] * y)
            offset += len(states)
            states.append(sum(terms))
        return torch.cat(states[-self.multiplier:], dim=1)


def _conv_bits(module: nn.Module) -> tuple[Bits, ...] | None:
    """Discretised bits of the convolutions of ``module``; ``None`` if any of them is float."""
    out = []
    for conv in conv_layers(module):
        if isinstance(conv, MixedQuantConv2d):
            out.append(conv.chosen_bits())
        elif isinstance(conv, QuantConv2d) and conv.weight_bit_width is not None and conv.act_bit_width is not None:
            out.append((conv.weight_bit_width, conv.act_bit_width))
        else:
            return None
    return tuple(out)


class CellSuperNet(nn.Module):
    """The DARTS / ∇QDARTS search network (see the module docstring).

    Args:
        num_classes: classifier outputs.
        C: initial channels of the cells (DARTS search: 16).
        layers: number of cells (DARTS search: 8).
        steps: intermediate nodes per cell (4).
        multiplier: nodes concatenated into the cell output (4).
        stem_multiplier: stem channels are ``stem_multiplier * C`` (3).
        in_chans: input image channels.
        primitives: candidate operations (default: the 8 DARTS operations).
        bits: bit-widths of the precision mixtures, ``None`` for float, one value for fixed precision.
        partial_channels: PC-DARTS ``K`` (1 = all channels; PC-DARTS uses 4 on CIFAR).
        edge_normalization: PC-DARTS edge logits ``β``.
        alpha_init_std: standard deviation of the random initial ``α``/``β`` (DARTS: 1e-3).
        gamma_init_std: standard deviation of the random initial ``γ``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        C: int = 16,
        layers: int = 8,
        steps: int = 4,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        in_chans: int = 3,
        primitives: Sequence[str] | None = None,
        bits: Sequence[int] | None = (2, 4),
        partial_channels: int = 1,
        edge_normalization: bool = False,
        alpha_init_std: float = 1e-3,
        gamma_init_std: float = 1e-3,
    ):
        super().__init__()
        primitives = check_primitives(PRIMITIVES if primitives is None else primitives)
        for name, value in (("num_classes", num_classes), ("C", C), ("layers", layers), ("steps", steps),
                            ("stem_multiplier", stem_multiplier), ("in_chans", in_chans),
                            ("partial_channels", partial_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CellSuperNet: {name} must be an int >= 1, got {value!r}")
        if not 1 <= multiplier <= steps:
            raise ValueError(f"CellSuperNet: multiplier must be in [1, steps={steps}], got {multiplier}")
        if C % partial_channels or (C // partial_channels) % 2:
            raise ValueError(f"CellSuperNet: C / partial_channels must be an even integer (FactorizedReduce halves "
                             f"it), got C={C}, partial_channels={partial_channels}")
        self.bits = None if bits is None else check_bits(bits)
        self.primitives = primitives
        self.num_classes = num_classes
        self.C, self.layers, self.steps, self.multiplier = C, layers, steps, multiplier
        self.in_chans = in_chans
        self.partial_channels = partial_channels
        self.edge_normalization = edge_normalization
        conv = conv_factory(self.bits, gamma_init_std)

        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_chans, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        reductions = reduction_layers(layers)
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                C_curr *= 2
            self.cells.append(SearchCell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev,
                                         primitives, conv, partial_channels))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

        E = num_edges(steps)
        self.alphas_normal = nn.Parameter(alpha_init_std * torch.randn(E, len(primitives)))
        self.alphas_reduce = nn.Parameter(alpha_init_std * torch.randn(E, len(primitives)))
        if edge_normalization:
            self.betas_normal = nn.Parameter(alpha_init_std * torch.randn(E))
            self.betas_reduce = nn.Parameter(alpha_init_std * torch.randn(E))
        else:
            self.betas_normal = self.betas_reduce = None
        self._normaliser: int | None = None

    # Forward ----------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        w_normal, w_reduce = F.softmax(self.alphas_normal, dim=-1), F.softmax(self.alphas_reduce, dim=-1)
        e_normal = e_reduce = None
        if self.edge_normalization:
            e_normal = edge_weights(self.betas_normal, self.steps)
            e_reduce = edge_weights(self.betas_reduce, self.steps)
        for cell in self.cells:
            if cell.reduction:
                s0, s1 = s1, cell(s0, s1, w_reduce, e_reduce)
            else:
                s0, s1 = s1, cell(s0, s1, w_normal, e_normal)
        return self.classifier(self.global_pooling(s1).flatten(1))

    # Parameter groups -------------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """``α`` (and ``β``): trained on the held-out split."""
        params = [self.alphas_normal, self.alphas_reduce]
        if self.edge_normalization:
            params += [self.betas_normal, self.betas_reduce]
        return params

    def mixed_convs(self) -> list[MixedQuantConv2d]:
        """Every precision mixture, in network order."""
        return [m for m in self.modules() if isinstance(m, MixedQuantConv2d)]

    def precision_parameters(self) -> list[nn.Parameter]:
        """``γ_weight`` and ``γ_act`` of every precision mixture: trained with the weights on the train split."""
        return [p for m in self.mixed_convs() for p in (m.gamma_weight, m.gamma_act)]

    def weight_parameters(self) -> list[nn.Parameter]:
        """The network weights ``w`` (everything but ``α``, ``β``, ``γ``)."""
        skip = {id(p) for p in self.arch_parameters()} | {id(p) for p in self.precision_parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    @property
    def has_precision_mixtures(self) -> bool:
        return any(isinstance(m, MixedQuantConv2d) for m in self.modules())

    # Complexity -------------------------------------------------------------------------------------
    @torch.no_grad()
    def trace(self, input_size: int | Sequence[int]) -> None:
        """Run one forward at ``input_size`` (H, W) so every mixed convolution records its MACs."""
        hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)[-2:]
        was_training = self.training
        ref = self.alphas_normal
        for m in self.mixed_convs():
            m.macs = None
        try:
            self.eval()
            self(torch.zeros(1, self.in_chans, *hw, device=ref.device, dtype=ref.dtype))
        finally:
            self.train(was_training)
        convs = self.mixed_convs()
        self._normaliser = convs[0].macs if convs else None

    def expected_bitops(self) -> Tensor:
        """``Σ_l MACs_l · E[weight bits]_l · E[act bits]_l`` over all precision mixtures, per sample."""
        convs = self.mixed_convs()
        if not convs:
            raise ValueError("CellSuperNet.expected_bitops: the network has no precision mixtures "
                             f"(bits={self.bits}); build it with at least two bit-widths, e.g. bits=(2, 4)")
        if any(m.macs is None for m in convs):
            raise RuntimeError("CellSuperNet.expected_bitops: call trace(input_size) (or run a forward) first")
        return torch.stack([m.expected_bitops() for m in convs]).sum()

    def complexity(self) -> Tensor:
        """The ∇QDARTS complexity term: expected BitOps divided by the MACs of the first mixed convolution."""
        bitops = self.expected_bitops()
        if self._normaliser is None:
            self._normaliser = self.mixed_convs()[0].macs
        return bitops / self._normaliser

    # Discretisation ---------------------------------------------------------------------------------
    def genotype(self) -> Genotype:
        """DARTS derivation (top-2 inputs per node by ``softmax(α) × softmax(β)``, argmax op), plus the
        argmax bit-widths of every kept convolution of every cell (``precision=None`` for a float net)."""
        concat = tuple(range(2 + self.steps - self.multiplier, self.steps + 2))
        derived = {}
        for reduction, alphas, betas in ((False, self.alphas_normal, self.betas_normal),
                                         (True, self.alphas_reduce, self.betas_reduce)):
            ew = None if betas is None else edge_weights(betas.detach(), self.steps)
            derived[reduction] = derive_cell(F.softmax(alphas.detach(), dim=-1), self.steps, self.primitives, ew)
        precision: list[CellPrecision] | None = []
        for cell in self.cells:
            pre0, pre1 = _conv_bits(cell.preprocess0), _conv_bits(cell.preprocess1)
            edges = [_conv_bits(cell.edges[e].op(op)) for op, _, e in derived[cell.reduction]]
            if pre0 is None or pre1 is None or any(e is None for e in edges):
                precision = None
                break
            precision.append(CellPrecision(cell.reduction, pre0, pre1, tuple(edges)))
        return Genotype(
            normal=tuple((op, j) for op, j, _ in derived[False]), normal_concat=concat,
            reduce=tuple((op, j) for op, j, _ in derived[True]), reduce_concat=concat,
            precision=None if precision is None else tuple(precision),
        )

"""The fixed network of a genotype (DARTS evaluation network), float or mixed precision.

:class:`DARTSNetwork` builds the cells of a :class:`~ws_nas.genotype.Genotype` — each node sums its two
kept edges, each edge its argmax operation — with ``C`` initial channels and ``layers`` cells
(reduction cells at 1/3 and 2/3 of the depth). Convolutions in the cells are:

* ``precision="genotype"`` — :class:`~ws_nas.quant.QuantConv2d` with the genotype's per-convolution
  bit-widths; when the network has more cells than the search network, the search cells' bits are
  re-used cyclically per cell type (∇QDARTS). A preprocessing block whose convolution count differs
  from the search cell's (``ReLUConvBN`` vs ``FactorizedReduce`` after a reduction cell) takes the
  highest searched bit-widths of that block for each of its convolutions. A genotype without
  precision gives a float network.
* ``precision=(w, a)`` — uniform ``w``-bit weights and ``a``-bit activations everywhere in the cells
  (the uniform-precision QAT / PTQ baselines).
* ``precision="float"`` — ``nn.Conv2d`` (DARTS fp32).

The stem and the classifier are float. Drop-path (DARTS) uses :func:`timm.layers.drop_path`.

Example::

    >>> net = DARTSNetwork(genotype, num_classes=10, C=8, layers=3, in_chans=1)   # doctest: +SKIP
    >>> cost_report(net, (8, 8)).bitops                                          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
from timm.layers import drop_path
from torch import Tensor, nn

from ws_core import SubNetConfig

from .genotype import Bits, Genotype
from .operations import ConvFactory, FactorizedReduce, Identity, ReLUConvBN, build_op, conv_layers, float_conv
from .quant import QuantConv2d, check_bits
from .supernet import reduction_layers

__all__ = ["Cell", "DARTSNetwork", "parse_precision"]


def parse_precision(precision: str | Sequence[int]) -> str | Bits:
    """``"genotype"``, ``"float"`` or a ``(weight bits, act bits)`` pair, validated."""
    if isinstance(precision, str):
        if precision not in ("genotype", "float"):
            raise ValueError(f"precision must be 'genotype', 'float' or [weight bits, act bits], got {precision!r}")
        return precision
    values = list(precision)
    if len(values) != 2:
        raise ValueError(f"precision must be 'genotype', 'float' or [weight bits, act bits], got {precision!r}")
    return (check_bits(values[0], "precision weight bits")[0], check_bits(values[1], "precision act bits")[0])


class _BitsFactory:
    """A conv factory handing out ``QuantConv2d`` layers with the given bits, in order."""

    def __init__(self, bits: Sequence[Bits], where: str):
        self.bits = list(bits)
        self.where = where
        self.used = 0

    def __call__(self, *args, **kwargs) -> nn.Module:
        if self.used >= len(self.bits):
            raise ValueError(f"{self.where}: the genotype gives bit-widths for {len(self.bits)} convolutions, "
                             "the operation has more")
        w, a = self.bits[self.used]
        self.used += 1
        return QuantConv2d(*args, weight_bit_width=w, act_bit_width=a, **kwargs)

    def check_done(self) -> None:
        if self.used != len(self.bits):
            raise ValueError(f"{self.where}: the genotype gives bit-widths for {len(self.bits)} convolutions, "
                             f"the operation has {self.used}")


def _build(builder, bits: Sequence[Bits] | None, uniform: ConvFactory | None, where: str) -> nn.Module:
    if bits is None:
        return builder(uniform)
    factory = _BitsFactory(bits, where)
    module = builder(factory)
    factory.check_done()
    return module


def _fit(bits: Sequence[Bits], n: int) -> tuple[Bits, ...]:
    """``bits`` for ``n`` convolutions; on a count mismatch, the highest searched bits for each."""
    if len(bits) == n:
        return tuple(bits)
    top = (max(b[0] for b in bits), max(b[1] for b in bits))
    return (top,) * n


class Cell(nn.Module):
    """A cell of the evaluation network, built from one cell type of a genotype."""

    def __init__(self, genotype: Genotype, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, conv: ConvFactory | None, precision=None, name: str = "cell"):
        super().__init__()
        self.reduction = reduction
        if reduction:
            ops, concat = genotype.reduce, genotype.reduce_concat
        else:
            ops, concat = genotype.normal, genotype.normal_concat
        self.steps = len(ops) // 2
        self.concat = tuple(concat)
        self.multiplier = len(concat)
        self.indices = tuple(j for _, j in ops)

        def pre0(f):
            return FactorizedReduce(C_prev_prev, C, f) if reduction_prev else ReLUConvBN(C_prev_prev, C, 1, 1, 0, f)

        def pre1(f):
            return ReLUConvBN(C_prev, C, 1, 1, 0, f)

        n_pre0 = 2 if reduction_prev else 1
        self.preprocess0 = _build(pre0, None if precision is None else _fit(precision.preprocess0, n_pre0), conv,
                                  f"{name}.preprocess0")
        self.preprocess1 = _build(pre1, None if precision is None else _fit(precision.preprocess1, 1), conv,
                                  f"{name}.preprocess1")
        self.ops = nn.ModuleList()
        for k, (op_name, j) in enumerate(ops):
            stride = 2 if reduction and j < 2 else 1
            self.ops.append(_build(partial(lambda f, n, s: build_op(n, C, s, f), n=op_name, s=stride),
                                   None if precision is None else precision.edges[k], conv, f"{name}.ops[{k}]"))

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float = 0.0) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self.steps):
            terms = []
            for k in (2 * i, 2 * i + 1):
                op = self.ops[k]
                h = op(states[self.indices[k]])
                if self.training and drop_prob > 0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob, self.training)
                terms.append(h)
            states.append(terms[0] + terms[1])
        return torch.cat([states[i] for i in self.concat], dim=1)


class DARTSNetwork(nn.Module):
    """The evaluation network of a genotype (see the module docstring).

    Args:
        genotype: a :class:`Genotype`, its dict/JSON, or a path to its JSON file.
        num_classes: classifier outputs.
        C: initial channels (DARTS evaluation: 36).
        layers: cells (DARTS evaluation: 20).
        in_chans: input image channels.
        stem_multiplier: stem channels are ``stem_multiplier * C``.
        precision: ``"genotype"``, ``"float"`` or ``(weight bits, act bits)``.
        drop_path_prob: DARTS drop-path probability (0 disables it).
    """

    def __init__(
        self,
        genotype: Genotype | dict | str,
        num_classes: int = 10,
        C: int = 36,
        layers: int = 20,
        in_chans: int = 3,
        stem_multiplier: int = 3,
        precision: str | Sequence[int] = "genotype",
        drop_path_prob: float = 0.0,
    ):
        super().__init__()
        genotype = Genotype.parse(genotype)
        for name, value in (("num_classes", num_classes), ("C", C), ("layers", layers), ("in_chans", in_chans),
                            ("stem_multiplier", stem_multiplier)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DARTSNetwork: {name} must be an int >= 1, got {value!r}")
        if C % 2:
            raise ValueError(f"DARTSNetwork: C must be even (FactorizedReduce halves it), got {C}")
        if not 0.0 <= drop_path_prob < 1.0:
            raise ValueError(f"DARTSNetwork: drop_path_prob must be in [0, 1), got {drop_path_prob}")
        precision = parse_precision(precision)
        if precision == "genotype" and genotype.precision is None:
            precision = "float"
        self.genotype = genotype
        self.precision = precision
        #: The constructor arguments besides the genotype and precision (to build a sibling network).
        self.config = dict(num_classes=num_classes, C=C, layers=layers, in_chans=in_chans,
                           stem_multiplier=stem_multiplier, drop_path_prob=drop_path_prob)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_path_prob = drop_path_prob

        uniform: ConvFactory | None = None
        if precision == "float":
            uniform = float_conv
        elif precision != "genotype":
            uniform = partial(QuantConv2d, weight_bit_width=precision[0], act_bit_width=precision[1])

        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_chans, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        reductions = reduction_layers(layers)
        seen = {False: 0, True: 0}
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                C_curr *= 2
            cell_bits = None
            if precision == "genotype":
                cell_bits = genotype.cell_precision(reduction, seen[reduction])
            seen[reduction] += 1
            cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev, uniform, cell_bits,
                        name=f"cells[{i}]")
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
        return self.classifier(self.global_pooling(s1).flatten(1))

    def quantized_layers(self) -> list[QuantConv2d]:
        """The quantized convolutions (each with ``weight_bit_width`` / ``act_bit_width``)."""
        return [m for m in conv_layers(self) if isinstance(m, QuantConv2d)]

    @contextmanager
    def subnet(self, cfg=None) -> Iterator[SubNetConfig]:
        """A fixed network is its own single SubNet; lets ws-core's BN recalibration run on it."""
        if cfg:
            raise ValueError(f"DARTSNetwork is a fixed network and has no SubNets to activate, got {cfg!r}")
        yield SubNetConfig()

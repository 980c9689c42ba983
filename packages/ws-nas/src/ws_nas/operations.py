"""The DARTS candidate operations (Liu et al., 2019), built over a pluggable convolution.

The eight primitives of the DARTS CNN space, in DARTS order: ``none``, ``max_pool_3x3``,
``avg_pool_3x3``, ``skip_connect``, ``sep_conv_3x3``, ``sep_conv_5x5``, ``dil_conv_3x3``,
``dil_conv_5x5``. Separable convolutions are applied twice; every conv block is ReLU-Conv-BN.

Every operation builds its convolutions through a *conv factory* — a callable with the signature of
``nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)`` plus the
keyword ``act_signed`` (``True`` for the pointwise convolution after a depthwise one, whose input has
no ReLU before it) — so one definition serves the float network (:func:`float_conv`), the search network
(:class:`~ws_nas.quant.MixedQuantConv2d`) and the final mixed-precision network
(:class:`~ws_nas.quant.QuantConv2d` with per-conv bit-widths). Convolutions are created in forward
order, so ``[m for m in op.modules() if isinstance(m, nn.Conv2d)]`` lists them as they run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "OPS",
    "PRIMITIVES",
    "ConvFactory",
    "DilConv",
    "FactorizedReduce",
    "Identity",
    "ReLUConvBN",
    "SepConv",
    "Zero",
    "build_op",
    "check_primitives",
    "conv_layers",
    "float_conv",
]

#: The DARTS candidate operations, in DARTS order.
PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

ConvFactory = Callable[..., nn.Module]


def float_conv(*args, act_signed: bool = False, **kwargs) -> nn.Conv2d:
    """The float conv factory: ``nn.Conv2d`` (``act_signed`` only matters to quantized convs)."""
    return nn.Conv2d(*args, **kwargs)


def check_primitives(primitives) -> tuple[str, ...]:
    """Validate a list of candidate operations (known names, distinct, at least one besides ``none``)."""
    if isinstance(primitives, str):
        raise ValueError(f"primitives must be a list of operation names from {list(PRIMITIVES)}, got {primitives!r}")
    ops = tuple(primitives)
    for op in ops:
        if op not in OPS:
            raise ValueError(f"unknown operation {op!r}; allowed: {list(PRIMITIVES)}")
    if len(set(ops)) != len(ops):
        raise ValueError(f"primitives must be distinct, got {list(ops)}")
    if not [op for op in ops if op != "none"]:
        raise ValueError(f"primitives need at least one operation besides 'none', got {list(ops)}")
    return ops


class ReLUConvBN(nn.Module):
    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, conv: ConvFactory,
                 affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            conv(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 conv: ConvFactory, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            conv(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=C_in, bias=False),
            conv(C_in, C_out, 1, padding=0, bias=False, act_signed=True),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class SepConv(nn.Module):
    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, conv: ConvFactory,
                 affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            conv(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            conv(C_in, C_in, 1, padding=0, bias=False, act_signed=True),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            conv(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            conv(C_in, C_out, 1, padding=0, bias=False, act_signed=True),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


#: The ``skip_connect`` of stride 1 (``nn.Identity``, so exporters know it).
Identity = nn.Identity


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset stride-2 1×1 convolutions (``C_out`` must be even)."""

    def __init__(self, C_in: int, C_out: int, conv: ConvFactory, affine: bool = True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = conv(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = conv(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


#: ``name -> builder(C, stride, conv, affine)`` for every primitive.
OPS: dict[str, Callable[[int, int, ConvFactory, bool], nn.Module]] = {
    "none": lambda C, stride, conv, affine: Zero(stride),
    "avg_pool_3x3": lambda C, stride, conv, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda C, stride, conv, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda C, stride, conv, affine: (
        Identity() if stride == 1 else FactorizedReduce(C, C, conv, affine=affine)
    ),
    "sep_conv_3x3": lambda C, stride, conv, affine: SepConv(C, C, 3, stride, 1, conv, affine=affine),
    "sep_conv_5x5": lambda C, stride, conv, affine: SepConv(C, C, 5, stride, 2, conv, affine=affine),
    "dil_conv_3x3": lambda C, stride, conv, affine: DilConv(C, C, 3, stride, 2, 2, conv, affine=affine),
    "dil_conv_5x5": lambda C, stride, conv, affine: DilConv(C, C, 5, stride, 4, 2, conv, affine=affine),
}


def build_op(name: str, C: int, stride: int, conv: ConvFactory = float_conv, affine: bool = True) -> nn.Module:
    """Build primitive ``name`` on ``C`` channels with stride ``stride``, its convs made by ``conv``."""
    if name not in OPS:
        raise ValueError(f"unknown operation {name!r}; allowed: {list(PRIMITIVES)}")
    return OPS[name](C, stride, conv, affine)


def conv_layers(module: nn.Module) -> list[nn.Conv2d]:
    """The convolutions of ``module`` in forward (= construction) order."""
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]

"""QONNX export of the final mixed-precision network through ws-sushi's exporter (optional extra).

:func:`to_brevitas` rewrites a network with the same numerics in brevitas layers, reading only the
documented bit-width attributes of :class:`~ws_nas.quant.QuantConv2d` (``weight_bit_width``,
``act_bit_width``) and its quantizer parameters:

* the HWGQ input quantizer becomes ``brevitas.nn.QuantReLU`` with a constant scale (HWGQ's step
  times the layer's ``input_std``), unsigned ``a``-bit; a signed input quantizer becomes
  ``brevitas.nn.QuantIdentity``, signed ``a``-bit, zero point ``-0.5`` (mid-rise), constant scale;
* the conv becomes ``brevitas.nn.QuantConv2d`` with a per-tensor constant scale (``step_w · std(W)``),
  signed ``w``-bit, not narrow, zero point ``-0.5`` (the mid-rise grid).

:func:`export_qonnx` then calls ``ws_sushi.quant.export_qonnx`` (brevitas' QONNX export + qonnx
cleanup), so every quantized convolution appears in the QONNX graph as ``Quant`` nodes carrying its
own bit-widths. ws-sushi, brevitas and qonnx are imported only here, when called:
``pip install 'ws-nas[sushi]'``.

Example::

    >>> model = export_qonnx(net, "final.qonnx.onnx", torch.randn(1, 1, 8, 8))   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import functools
import os
from typing import Any

import torch
from torch import Tensor, nn

from .quant import QuantConv2d, weight_scale

__all__ = ["export_qonnx", "sushi_exporter", "to_brevitas"]


@functools.cache
def _brevitas_quantizers():
    """The brevitas quantizer classes matching ws-nas' quantizers (built on first use)."""
    try:
        import brevitas
        from brevitas.core.utils import StatelessBuffer
        from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerTensorFloat, Uint8ActPerTensorFloat
    except ImportError as e:
        raise ImportError("QONNX export needs brevitas: pip install 'ws-nas[sushi]'") from e

    class MidRiseZeroPoint(brevitas.jit.ScriptModule):
        """Constant zero point -0.5: integer ``q`` stands for ``(q + 0.5) · scale``."""

        def __init__(self, dtype=None, device=None):
            super().__init__()
            self.zero_point = StatelessBuffer(torch.tensor(-0.5, dtype=dtype, device=device))

        @brevitas.jit.script_method
        def forward(self, x: Tensor, scale: Tensor, bit_width: Tensor) -> Tensor:
            return self.zero_point()

    class MidRiseWeightQuant(Int8WeightPerTensorFloat):
        narrow_range = False
        scaling_impl_type = "const"
        scaling_const = 1.0
        zero_point_impl = MidRiseZeroPoint

    class HWGQActQuant(Uint8ActPerTensorFloat):
        scaling_impl_type = "const"

    class MidRiseActQuant(Int8ActPerTensorFloat):
        narrow_range = False
        scaling_impl_type = "const"
        zero_point_impl = MidRiseZeroPoint

    return MidRiseWeightQuant, HWGQActQuant, MidRiseActQuant


def _convert(conv: QuantConv2d) -> nn.Module:
    import brevitas.nn as qnn

    weight_quant, unsigned_quant, signed_quant = _brevitas_quantizers()
    layers: list[nn.Module] = []
    params = conv.act_quant_params()
    if params is not None:
        a = params.bit_width
        if params.signed:
            # brevitas' scale is the threshold over 2^(a-1) for a signed, not narrow, a-bit integer.
            threshold = params.scale * 2 ** (a - 1)
            layers.append(qnn.QuantIdentity(act_quant=signed_quant, bit_width=a, min_val=-threshold,
                                            max_val=threshold, return_quant_tensor=False))
        else:
            layers.append(qnn.QuantReLU(act_quant=unsigned_quant, bit_width=a, max_val=(2**a - 1) * params.scale,
                                        return_quant_tensor=False))
    kwargs: dict[str, Any] = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                                  groups=conv.groups, bias=conv.bias is not None)
    if conv.weight_bit_width is not None:
        w = conv.weight_bit_width
        # brevitas' scale is the threshold over 2^(w-1) for a signed, not narrow, w-bit integer.
        kwargs.update(weight_quant=weight_quant, weight_bit_width=w,
                      weight_scaling_const=float(weight_scale(conv.weight, w)) * 2 ** (w - 1))
        new = qnn.QuantConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, **kwargs)
    else:
        new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, **kwargs)
    with torch.no_grad():
        new.weight.copy_(conv.weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    layers.append(new.to(conv.weight.device))
    return nn.Sequential(*layers)


def to_brevitas(net: nn.Module) -> nn.Module:
    """A copy of ``net`` (eval mode) with every :class:`QuantConv2d` rewritten in brevitas layers.

    Raises:
        ImportError: if brevitas is not installed.
    """
    model = copy.deepcopy(net).eval()

    def swap(module: nn.Module) -> None:
        for name, child in list(module.named_children()):
            if isinstance(child, QuantConv2d):
                setattr(module, name, _convert(child))
            else:
                swap(child)

    swap(model)
    return model.eval()


def sushi_exporter():
    """ws-sushi's QONNX exporter, ``ws_sushi.quant.export_qonnx(model, example_input, path)``.

    Raises:
        ImportError: if ws-sushi is not installed, or it has no QONNX exporter.
    """
    try:
        from ws_sushi import quant as sushi_quant
    except ImportError as e:
        raise ImportError("QONNX export goes through ws-sushi, which is not installed: "
                          "pip install 'ws-nas[sushi]' (or packages/ws-sushi)") from e
    exporter = getattr(sushi_quant, "export_qonnx", None)
    if not callable(exporter):
        raise ImportError("the installed ws-sushi has no QONNX exporter (ws_sushi.quant.export_qonnx); "
                          "update ws-sushi")
    return exporter


def export_qonnx(net: nn.Module, path: str | os.PathLike, example_input: Tensor) -> Any:
    """Export ``net`` (e.g. a :class:`~ws_nas.network.DARTSNetwork`) to QONNX at ``path`` via ws-sushi.

    Returns what ws-sushi's exporter returns (the cleaned qonnx ``ModelWrapper``).

    Raises:
        ImportError: if ws-sushi (or brevitas) is not installed or ws-sushi has no exporter.
    """
    exporter = sushi_exporter()
    return exporter(to_brevitas(net), example_input, path)

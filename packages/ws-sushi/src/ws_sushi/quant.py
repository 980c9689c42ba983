"""Quantized SubNets with brevitas, exported to QONNX and checked with qonnx's executor.

The FINN flow starts from a quantized network in the QONNX format. This module builds one from an
extracted SubNet (:meth:`ws_core.SuperNet.extract`, plain PyTorch layers):

1. :func:`quantize_subnet` swaps every ``nn.Conv2d`` / ``nn.Linear`` for brevitas'
   ``QuantConv2d`` / ``QuantLinear`` (weights copied, ``weight_bits`` per-tensor integer weights),
   every ``nn.ReLU`` for ``QuantReLU`` and follows every ``nn.Hardswish`` with a ``QuantIdentity``
   (``act_bits`` activations), and quantizes the input (``input_bits``); activation scales are
   calibrated with brevitas' ``calibration_mode`` on a few batches. Anything else in the SubNet must
   be one of :data:`PASSTHROUGH_LAYERS`; other layers raise :class:`UnsupportedLayerError` up front.
2. :func:`export_qonnx` runs ``brevitas.export.export_qonnx(..., dynamo=False)`` (the TorchScript
   exporter; the default dynamo exporter needs onnxscript and is not what FINN is tested with) and
   cleans the graph with ``qonnx.util.cleanup.cleanup_model``.
3. :func:`run_qonnx` executes the cleaned model with ``qonnx.core.onnx_exec.execute_onnx``;
   :func:`check_qonnx` compares it with the PyTorch model's output.

brevitas and qonnx are imported lazily, so the rest of ws-sushi does not pay their import time.

Example::

    >>> sub = net.extract(net.space.min()).eval()
    >>> qsub = quantize_subnet(sub, QuantSpec(weight_bits=8, act_bits=8), calibration=[x])
    >>> model = export_qonnx(qsub, x, "subnet.qonnx.onnx")
    >>> check_qonnx(model, qsub, x) < 1e-5
    True
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "PASSTHROUGH_LAYERS",
    "ExportError",
    "QuantSpec",
    "QuantizedSubNet",
    "UnsupportedLayerError",
    "check_qonnx",
    "check_supported",
    "export_qonnx",
    "quantize_subnet",
    "run_qonnx",
]

#: layers kept as they are (BatchNorm, activations, pooling, shape ops)
PASSTHROUGH_LAYERS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm2d, nn.BatchNorm1d, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Identity,
    nn.Dropout, nn.Flatten, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d,
)
_QUANTIZED = (nn.Conv2d, nn.Linear)


class UnsupportedLayerError(ValueError):
    """A layer the QONNX export path does not support (named with its module path and type)."""


class ExportError(RuntimeError):
    """The ONNX exporter or qonnx failed on a model that passed :func:`check_supported`."""


@dataclass(frozen=True)
class QuantSpec:
    """Bit-widths of a quantized SubNet.

    Attributes:
        weight_bits: integer bits of conv/linear weights (per-tensor scale).
        act_bits: bits of activations after ReLU/Hardswish (``None``: keep them float).
        input_bits: bits of the network input.
    """

    weight_bits: int = 8
    act_bits: int | None = 8
    input_bits: int = 8

    def __post_init__(self) -> None:
        for name in ("weight_bits", "act_bits", "input_bits"):
            v = getattr(self, name)
            if v is None and name == "act_bits":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= 16:
                raise ValueError(f"QuantSpec: {name} must be an int in [2, 16], got {v!r}")


def check_supported(model: nn.Module) -> None:
    """Raise :class:`UnsupportedLayerError` unless every leaf layer of ``model`` can be exported.

    Leaf layers must be ``nn.Conv2d`` (any groups), ``nn.Linear`` or one of
    :data:`PASSTHROUGH_LAYERS`. A SuperNet (elastic layers) must be extracted first.
    """
    from ws_core.elastic import ElasticModule

    allowed = sorted({t.__name__ for t in (*_QUANTIZED, *PASSTHROUGH_LAYERS)})

    def visit(name: str, module: nn.Module) -> None:
        if isinstance(module, ElasticModule):
            raise UnsupportedLayerError(
                f"layer {name!r} is an elastic SuperNet layer ({type(module).__name__}); export a standalone "
                f"SubNet instead: sub = net.extract(cfg)"
            )
        if _is_brevitas(module) or type(module) in _QUANTIZED or isinstance(module, PASSTHROUGH_LAYERS):
            return  # brevitas layers are exported by brevitas itself
        if not len(module._modules):
            raise UnsupportedLayerError(
                f"layer {name or '<root>'!r} of type {type(module).__name__} is not supported for QONNX export; "
                f"supported layers are {allowed}"
            )
        for child_name, child in module.named_children():  # a container: its forward composes children
            visit(f"{name}.{child_name}" if name else child_name, child)

    visit("", model)


def _is_brevitas(module: nn.Module) -> bool:
    return type(module).__module__.startswith("brevitas.")


class QuantizedSubNet(nn.Module):
    """``input_quant`` (brevitas ``QuantIdentity``) followed by the quantized SubNet ``body``."""

    def __init__(self, input_quant: nn.Module, body: nn.Module, spec: QuantSpec) -> None:
        super().__init__()
        self.input_quant, self.body, self.spec = input_quant, body, spec

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.input_quant(x))


def _swap(module: nn.Module, spec: QuantSpec) -> None:
    import brevitas.nn as qnn

    for name, child in list(module.named_children()):
        new: nn.Module | None = None
        if type(child) is nn.Conv2d:
            new = qnn.QuantConv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                  child.padding, child.dilation, child.groups, bias=child.bias is not None,
                                  weight_bit_width=spec.weight_bits)
        elif type(child) is nn.Linear:
            new = qnn.QuantLinear(child.in_features, child.out_features, bias=child.bias is not None,
                                  weight_bit_width=spec.weight_bits)
        elif type(child) is nn.ReLU and spec.act_bits is not None:
            new = qnn.QuantReLU(bit_width=spec.act_bits)
        elif type(child) is nn.Hardswish and spec.act_bits is not None:
            new = nn.Sequential(nn.Hardswish(), qnn.QuantIdentity(bit_width=spec.act_bits))
        if new is None:
            _swap(child, spec)
            continue
        if isinstance(child, _QUANTIZED):
            with torch.no_grad():
                new.weight.copy_(child.weight)
                if child.bias is not None:
                    new.bias.copy_(child.bias)
            new = new.to(child.weight.device)
        setattr(module, name, new)


def quantize_subnet(
    model: nn.Module,
    spec: QuantSpec | None = None,
    calibration: Iterable[Tensor] | None = None,
) -> QuantizedSubNet:
    """A brevitas-quantized copy of ``model`` (an extracted SubNet), in eval mode.

    Args:
        model: a plain PyTorch module, e.g. ``net.extract(cfg)``; left unchanged.
        spec: bit-widths (default ``QuantSpec()``: 8-bit weights, activations and input).
        calibration: input batches for brevitas' activation-scale calibration (recommended: a few
            real batches; without them activation scales keep brevitas' initial values).

    Raises:
        UnsupportedLayerError: if ``model`` has a layer outside the supported set.
    """
    import brevitas.nn as qnn
    from brevitas.graph.calibrate import calibration_mode

    spec = spec or QuantSpec()
    check_supported(model)
    body = copy.deepcopy(model).eval()
    _swap(body, spec)
    qmodel = QuantizedSubNet(qnn.QuantIdentity(bit_width=spec.input_bits), body, spec).eval()
    ref = next(model.parameters(), None)
    if ref is not None:
        qmodel = qmodel.to(ref.device)
    if calibration is not None:
        with torch.no_grad(), calibration_mode(qmodel):
            for x in calibration:
                qmodel(x)
    return qmodel.eval()


def export_qonnx(model: nn.Module, example_input: Tensor, path: str | os.PathLike) -> Any:
    """Export ``model`` to QONNX at ``path`` (brevitas, TorchScript exporter), clean it with qonnx.

    Returns the cleaned ``qonnx.core.modelwrapper.ModelWrapper`` (also saved at ``path``).

    Raises:
        UnsupportedLayerError: before exporting, for unsupported layers.
        ExportError: if the exporter or qonnx's cleanup fails.
    """
    from brevitas.export import export_qonnx as _brevitas_export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    check_supported(model)
    path = os.fspath(path)
    tmp = f"{path}.raw.onnx"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _brevitas_export_qonnx(model, example_input, export_path=tmp, dynamo=False)
        cleaned = cleanup_model(ModelWrapper(tmp))
        cleaned.save(path)
    except UnsupportedLayerError:
        raise
    except Exception as e:  # the exporters raise many types; keep the cause attached
        raise ExportError(f"QONNX export of {type(model).__name__} failed: {type(e).__name__}: {e}") from e
    finally:
        model.train(was_training)
        if os.path.exists(tmp):
            os.remove(tmp)
    return cleaned


def run_qonnx(model: Any, x: Tensor | np.ndarray) -> np.ndarray:
    """Execute a (cleaned) QONNX model on ``x`` with qonnx's executor; returns the first output."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    if not isinstance(model, ModelWrapper):
        model = ModelWrapper(os.fspath(model))
    inp = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    name_in, name_out = model.graph.input[0].name, model.graph.output[0].name
    return execute_onnx(model, {name_in: inp.astype(np.float32)})[name_out]


def check_qonnx(model: Any, torch_model: nn.Module, x: Tensor) -> float:
    """Largest absolute difference between qonnx's execution of ``model`` and ``torch_model(x)``."""
    with torch.no_grad():
        expected = torch_model.eval()(x).detach().cpu().numpy()
    got = run_qonnx(model, x)
    if got.shape != expected.shape:
        raise ExportError(f"QONNX output shape {got.shape} != PyTorch output shape {expected.shape}")
    return float(np.abs(got - expected).max())

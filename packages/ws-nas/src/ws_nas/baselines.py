"""Baselines in the same code: post-training quantization of a trained float network.

The other baselines need no code of their own: DARTS fp32 is a search with ``bits=None`` and
``complexity_weight=0`` retrained with ``precision="float"``; uniform 2- / 4-bit quantization-aware
training of the DARTS result is the same genotype retrained with ``precision=(2, 2)`` / ``(4, 4)``.

:func:`post_training_quantize` copies a trained float :class:`~ws_nas.network.DARTSNetwork` into a
network with uniform ``(weight bits, act bits)`` in its cells — the same quantizers as everywhere
else (Gaussian weight steps × std(W), HWGQ / mid-rise activations) — estimates each quantized
layer's input scale on a few training batches (:func:`calibrate_input_scales`) and then re-estimates
the BatchNorm statistics with :func:`ws_core.bn.recalibrate_bn`. No weight is trained.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice

import torch
from torch import nn

from ws_core.bn import recalibrate_bn

from .network import DARTSNetwork
from .quant import MixedQuantConv2d, QuantConv2d

__all__ = ["calibrate_input_scales", "post_training_quantize"]


@torch.no_grad()
def calibrate_input_scales(net: nn.Module, loader: Iterable, num_batches: int = 10) -> None:
    """Set every quantized layer's ``input_std`` to its average over ``num_batches`` batches of ``loader``.

    Only the quantized layers run in training mode (BatchNorm keeps its statistics); modes and
    momenta are restored afterwards.
    """
    if num_batches < 1:
        raise ValueError(f"calibrate_input_scales: num_batches must be >= 1, got {num_batches}")
    layers = [m for m in net.modules() if isinstance(m, (QuantConv2d, MixedQuantConv2d))]
    modes = {m: m.training for m in net.modules()}
    momenta = {m: m.act_momentum for m in layers}
    device = next(net.parameters()).device
    try:
        net.eval()
        for m in layers:
            m.input_std.fill_(1.0)
            m.input_std_batches.zero_()
            m.act_momentum = None          # cumulative average
            m.train()
        seen = 0
        for batch in islice(loader, num_batches):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            net(x.to(device))
            seen += 1
        if seen == 0:
            raise ValueError("calibrate_input_scales: the loader yielded no batches")
    finally:
        for m, momentum in momenta.items():
            m.act_momentum = momentum
        for m, mode in modes.items():
            m.training = mode


def post_training_quantize(
    net: DARTSNetwork, precision: Sequence[int], calibration: Iterable | None = None, num_batches: int = 10
) -> DARTSNetwork:
    """A copy of float ``net`` with uniform ``precision = (weight bits, act bits)`` in its cells.

    Args:
        net: a trained float network (``precision="float"``).
        precision: ``(weight bits, act bits)``.
        calibration: loader of training batches for the input scales and BN statistics (``None`` keeps
            the float statistics and unit input scales).
        num_batches: batches used for each calibration.

    Returns:
        The quantized network, in eval mode, on ``net``'s device.
    """
    if not isinstance(net, DARTSNetwork):
        raise TypeError(f"post_training_quantize: expected a DARTSNetwork, got {type(net).__name__}")
    if net.precision != "float":
        raise ValueError(f"post_training_quantize: expected a float network, got precision={net.precision!r}")
    quantized = DARTSNetwork(net.genotype, precision=list(precision), **net.config)
    ref = next(net.parameters())
    quantized.to(ref.device)
    missing, unexpected = quantized.load_state_dict(net.state_dict(), strict=False)
    if unexpected or any(not k.endswith(("input_std", "input_std_batches")) for k in missing):
        raise ValueError(f"post_training_quantize: state dicts differ (missing {missing}, unexpected {unexpected})")
    if calibration is not None:
        calibrate_input_scales(quantized, calibration, num_batches)
        recalibrate_bn(quantized, calibration, num_batches=num_batches, device=ref.device)
    return quantized.eval()

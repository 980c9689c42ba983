"""Straight-through quantizers and the quantized convolutions of ∇QDARTS.

The quantizers of EdMIPS and ∇QDARTS (``QDARTS/model_search.py``), with steps that are the
MSE-optimal uniform steps of a Gaussian:

* **weights** — a uniform *mid-rise* quantizer (levels ``±s/2, ±3s/2, …``), step ``s = step_b · std(W)``
  with the Gaussian steps 1.596, 0.996, 0.586, 0.336 (1–4 bits) and ``std`` taken without gradient:
  ``Q(W) = (clamp(round(W / s - 0.5), -2^(b-1), 2^(b-1) - 1) + 0.5) * s`` — the reference's
  ``(round(W / s + 0.5) - 0.5) * s`` clamped to ``±(2^(b-1) - 0.5) s``, in QONNX form (the two differ
  only at exact ties). Gradient: straight-through (identity), clamp included.
* **activations after a ReLU** — HWGQ, the half-wave Gaussian quantizer:
  ``Q(x) = round(clamp(x, 0, (2^b - 1) s) / s) * s`` with ``s = hwgq_b · σ`` and the HWGQ steps 0.799,
  0.538, 0.3217, 0.185 (1–4 bits). Gradient: straight-through inside the clipping range, zero outside.
* **signed activations** (the input of the pointwise convolution that follows a depthwise one in
  ``sep_conv`` / ``dil_conv``, where there is no ReLU) — the weights' mid-rise Gaussian quantizer with
  ``s = step_b · σ``, straight-through inside ``[-2^(b-1) s, 2^(b-1) s]``. (The reference applies HWGQ
  there too, which silently inserts a ReLU between the two convolutions.)

``σ`` is the standard deviation of the (pre-ReLU) Gaussian an activation is assumed to come from,
estimated from the input: ``sqrt(2 · mean(x²))`` after a ReLU, ``sqrt(mean(x²))`` for signed inputs.
In training mode the batch estimate is used and folded into the running buffer ``input_std``
(exponential average, ``act_momentum``; ``None`` gives a cumulative average for calibration); in eval
mode the buffer is used, so the deployed quantizer has a constant scale. (The reference fixes
``σ = 1``, i.e. assumes every conv input is a BN output; DARTS cell inputs are sums of BN outputs.)

Steps for 8 bits are the MSE-optimal steps of the same distributions, computed numerically (grid
integration + bounded scalar minimisation): 0.030762 (Gaussian), 0.016528 (half-wave); the
reference uses per-batch min/max scaling for 8 bits, which is not a static quantizer. Supported
bit-widths: :data:`SUPPORTED_BITS`.

Layers:

* :class:`QuantConv2d` — a ``nn.Conv2d`` with fixed bit-widths, the building block of the final
  mixed-precision network;
* :class:`MixedQuantConv2d` — the search-time precision mixture: one full-precision weight, the
  output ``conv(Σ_b softmax(γ_act)_b Q_b(x), Σ_b softmax(γ_weight)_b Q_b(W))``.

**Bit-width attributes (read by exporters).** Every quantized layer of this package carries two
plain attributes: ``weight_bit_width`` and ``act_bit_width`` (``int``, or ``None`` for float), plus
``act_signed``. The activation bit-width is that of the layer's *input*.
:meth:`QuantConv2d.weight_quant_params` and :meth:`QuantConv2d.act_quant_params` give the quantizers
in QONNX ``Quant`` terms (``y = (clip(round(x / scale + zero_point), min_int, max_int) - zero_point) * scale``,
``narrow=False``): weights and signed activations ``signed=True, zero_point=-0.5`` (the mid-rise
offset), activations after a ReLU ``signed=False, zero_point=0``. Float layers (stem, classifier) are
plain ``nn.Conv2d`` / ``nn.Linear``.

Example::

    >>> conv = QuantConv2d(8, 8, 3, padding=1, bias=False, weight_bit_width=4, act_bit_width=2)
    >>> conv.weight_bit_width, conv.act_bit_width
    (4, 2)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ACT_STEPS",
    "SUPPORTED_BITS",
    "WEIGHT_STEPS",
    "MixedQuantConv2d",
    "QuantConv2d",
    "QuantParams",
    "check_bits",
    "expected_bits",
    "mixed_activation",
    "mixed_weight",
    "quantize_activation",
    "quantize_weight",
    "weight_scale",
]

#: MSE-optimal uniform (mid-rise) step of N(0, 1) per bit-width (Gaussian quantizer of weights).
WEIGHT_STEPS: dict[int, float] = {1: 1.596, 2: 0.996, 3: 0.586, 4: 0.336, 8: 0.030762}
#: HWGQ steps per bit-width (half-wave Gaussian quantizer of activations).
ACT_STEPS: dict[int, float] = {1: 0.799, 2: 0.538, 3: 0.3217, 4: 0.185, 8: 0.016528}
#: Bit-widths with a quantizer; precision mixtures draw from these.
SUPPORTED_BITS: tuple[int, ...] = tuple(sorted(WEIGHT_STEPS))


def check_bits(bits: Iterable[int] | int, name: str = "bits") -> tuple[int, ...]:
    """Validate a bit-width set: a non-empty collection of distinct supported bit-widths, returned sorted.

    Raises:
        ValueError: naming the allowed bit-widths and the value received.

    Example::

        >>> check_bits([4, 2])
        (2, 4)
    """
    if isinstance(bits, bool):
        raise ValueError(f"{name} must be bit-widths from {SUPPORTED_BITS}, got {bits!r}")
    if isinstance(bits, int):
        bits = (bits,)
    try:
        values = list(bits)
    except TypeError:
        raise ValueError(f"{name} must be bit-widths from {SUPPORTED_BITS}, got {bits!r}") from None
    if not values:
        raise ValueError(f"{name} must hold at least one bit-width from {SUPPORTED_BITS}, got none")
    for b in values:
        if isinstance(b, bool) or not isinstance(b, int) or b not in WEIGHT_STEPS:
            raise ValueError(f"{name}: unsupported bit-width {b!r}; allowed: {SUPPORTED_BITS}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name}: bit-widths must be distinct, got {values}")
    return tuple(sorted(values))


def _check_one(bits: int | None, name: str) -> int | None:
    if bits is None:
        return None
    return check_bits(bits, name)[0]


# Quantizers -------------------------------------------------------------------------------------
def weight_scale(weight: Tensor, bits: int) -> Tensor:
    """The step ``s = WEIGHT_STEPS[bits] · std(W)`` of the weight quantizer (no gradient).

    A one-element or constant tensor has no spread; its root mean square stands in for ``std`` so the
    step stays positive and finite.
    """
    w = weight.detach()
    spread = w.std() if w.numel() > 1 else w.new_zeros(())
    spread = torch.where(spread > 0, spread, w.pow(2).mean().sqrt())
    return WEIGHT_STEPS[bits] * spread.clamp_min(torch.finfo(w.dtype).tiny)


def quantize_weight(weight: Tensor, bits: int) -> Tensor:
    """Gaussian mid-rise quantization of a weight tensor with a straight-through (identity) gradient.

    Example::

        >>> w = torch.tensor([-2.0, -0.1, 0.1, 2.0])      # std = 1.6350
        >>> quantize_weight(w, 2)                          # s = 0.996 * 1.6350 = 1.6285: ±s/2, ±3s/2
        tensor([-2.4427, -0.8142,  0.8142,  2.4427])
    """
    s = weight_scale(weight, bits)
    h = 2 ** (bits - 1)
    q = (torch.round(weight.detach() / s - 0.5).clamp(-h, h - 1) + 0.5) * s
    return q + (weight - weight.detach())  # value exactly q, gradient the identity


def quantize_activation(x: Tensor, bits: int, scale: float | Tensor = 1.0, signed: bool = False) -> Tensor:
    """Quantize activations: HWGQ (``signed=False``) or the mid-rise Gaussian quantizer (``signed=True``).

    ``scale`` is ``σ``, the standard deviation of the Gaussian the activation is assumed to come from.
    Gradient: straight-through inside the clipping range, zero outside.

    Example::

        >>> quantize_activation(torch.tensor([-1.0, 0.2, 0.3, 1.0, 2.0]), 2)   # s = 0.538
        tensor([0.0000, 0.0000, 0.5380, 1.0760, 1.6140])
    """
    if signed:
        s = WEIGHT_STEPS[bits] * scale
        h = 2 ** (bits - 1)
        clipped = torch.maximum(torch.minimum(x, h * s), -h * s) if isinstance(s, Tensor) else x.clamp(-h * s, h * s)
        q = (torch.round(clipped.detach() / s - 0.5).clamp(-h, h - 1) + 0.5) * s
        return q + (clipped - clipped.detach())
    s = ACT_STEPS[bits] * scale
    upper = (2**bits - 1) * s
    clipped = torch.minimum(x.clamp_min(0.0), upper) if isinstance(upper, Tensor) else x.clamp(0.0, upper)
    return torch.round(clipped.detach() / s) * s + (clipped - clipped.detach())


def expected_bits(gamma: Tensor, bits: Sequence[int]) -> Tensor:
    """``E[bits] = Σ_b softmax(γ)_b · b`` (differentiable in ``γ``)."""
    return (F.softmax(gamma, dim=-1) * torch.tensor(bits, dtype=gamma.dtype, device=gamma.device)).sum(-1)


class _MixedActivation(torch.autograd.Function):
    """``Σ_b p_b · quantize_activation(x, b, scale, signed)`` in one autograd node (same values and gradients).

    The forward keeps what the backward needs — each quantized copy (for ``∂/∂p``) and the
    straight-through mask ``Σ_b p_b · 1[x inside b's clipping range]`` (for ``∂/∂x``) — so the
    backward is three elementwise operations per bit-width.
    """

    @staticmethod
    def forward(ctx, x: Tensor, probs: Tensor, bits: tuple[int, ...], scale: Tensor, signed: bool) -> Tensor:
        need_x, need_p = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        y = mask = None
        copies = []
        for i, b in enumerate(bits):
            lo, hi = _clip_range(b, scale, signed)
            q = _round_to_grid(torch.maximum(torch.minimum(x, hi), lo), b, scale, signed)
            if need_p:
                copies.append(q)
            y = q * probs[i] if y is None else y.add_(q * probs[i])
            if need_x:
                inside = ((x >= lo) & (x <= hi)).to(x.dtype).mul_(probs[i])
                mask = inside if mask is None else mask.add_(inside)
        ctx.save_for_backward(mask if need_x else None, *copies)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        mask, *copies = ctx.saved_tensors
        grad_x = grad * mask if ctx.needs_input_grad[0] else None
        grad_p = torch.stack([(grad * q).sum() for q in copies]) if ctx.needs_input_grad[1] else None
        return grad_x, grad_p, None, None, None


def _clip_range(bits: int, scale: Tensor, signed: bool) -> tuple[Tensor, Tensor]:
    if signed:
        h = 2 ** (bits - 1) * WEIGHT_STEPS[bits] * scale
        return -h, h
    return torch.zeros_like(scale), (2**bits - 1) * ACT_STEPS[bits] * scale


def _round_to_grid(clipped: Tensor, bits: int, scale: Tensor, signed: bool) -> Tensor:
    """The quantizer's grid value of an already clipped activation (no autograd)."""
    if signed:
        s = WEIGHT_STEPS[bits] * scale
        h = 2 ** (bits - 1)
        return (torch.round(clipped / s - 0.5).clamp(-h, h - 1) + 0.5) * s
    s = ACT_STEPS[bits] * scale
    return torch.round(clipped / s) * s


class _MixedWeight(torch.autograd.Function):
    """``Σ_b p_b · Q_b(W)`` in one autograd node; straight-through (identity) gradient for ``W``."""

    @staticmethod
    def forward(ctx, w: Tensor, probs: Tensor, bits: tuple[int, ...]) -> Tensor:
        std = w.std()
        qs = []
        for b in bits:
            s = WEIGHT_STEPS[b] * std
            h = 2 ** (b - 1)
            qs.append((torch.round(w / s - 0.5).clamp_(-h, h - 1).add_(0.5)).mul_(s))
        ctx.save_for_backward(probs, *qs)
        return sum(probs[i] * q for i, q in enumerate(qs))

    @staticmethod
    def backward(ctx, grad: Tensor):
        probs, *qs = ctx.saved_tensors
        grad_w = grad * probs.sum() if ctx.needs_input_grad[0] else None
        grad_p = torch.stack([(grad * q).sum() for q in qs]) if ctx.needs_input_grad[1] else None
        return grad_w, grad_p, None


def mixed_activation(x: Tensor, probs: Tensor, bits: Sequence[int], scale: float | Tensor = 1.0,
                     signed: bool = False) -> Tensor:
    """``Σ_b probs_b · quantize_activation(x, b, scale, signed)`` (fused; gradients as for the composition)."""
    scale = torch.as_tensor(scale, dtype=x.dtype, device=x.device).detach()
    return _MixedActivation.apply(x, probs, tuple(bits), scale, signed)


def mixed_weight(w: Tensor, probs: Tensor, bits: Sequence[int]) -> Tensor:
    """``Σ_b probs_b · quantize_weight(w, b)`` (fused; gradients as for the composition)."""
    return _MixedWeight.apply(w, probs, tuple(bits))


@dataclass(frozen=True)
class QuantParams:
    """A quantizer in QONNX ``Quant`` terms: ``y = (clip(round(x / scale + zero_point)) - zero_point) * scale``.

    ``clip`` is to ``[-2^(b-1), 2^(b-1) - 1]`` when ``signed`` else ``[0, 2^b - 1]`` (``narrow=False``).
    """

    bit_width: int
    scale: float
    zero_point: float
    signed: bool
    narrow: bool = False

    def apply(self, x: Tensor) -> Tensor:
        """The quantizer's forward, written the QONNX way (used to check the parameters)."""
        b = self.bit_width
        lo, hi = (-(2 ** (b - 1)), 2 ** (b - 1) - 1) if self.signed else (0, 2**b - 1)
        q = torch.round(x / self.scale + self.zero_point).clamp(lo, hi)
        return (q - self.zero_point) * self.scale


# Layers -----------------------------------------------------------------------------------------
class _InputScale:
    """The running estimate ``input_std`` of the input's Gaussian ``σ`` (see the module docstring)."""

    def _init_input_scale(self, act_signed: bool, act_momentum: float | None) -> None:
        if act_momentum is not None and not 0.0 < act_momentum <= 1.0:
            raise ValueError(f"act_momentum must be in (0, 1] or None, got {act_momentum!r}")
        self.act_signed = bool(act_signed)
        self.act_momentum = act_momentum
        self.register_buffer("input_std", torch.ones(()))
        self.register_buffer("input_std_batches", torch.zeros((), dtype=torch.long))

    def _input_scale(self, x: Tensor) -> Tensor:
        if not self.training:
            return self.input_std
        with torch.no_grad():
            mean_sq = x.detach().pow(2).mean()
            std = (mean_sq if self.act_signed else 2.0 * mean_sq).sqrt().clamp_min(1e-8).to(self.input_std.dtype)
            self.input_std_batches += 1
            m = self.act_momentum if self.act_momentum is not None else 1.0 / float(self.input_std_batches)
            self.input_std.mul_(1.0 - m).add_(m * std)
        return std


class QuantConv2d(_InputScale, nn.Conv2d):
    """``nn.Conv2d`` with fixed weight and input-activation bit-widths (``None`` keeps that side float).

    Args:
        *args, **kwargs: as for ``nn.Conv2d``.
        weight_bit_width: bits of the weights (Gaussian mid-rise quantizer), or ``None``.
        act_bit_width: bits of the input activations, or ``None``.
        act_signed: the input is signed (no ReLU before this conv): mid-rise quantizer instead of HWGQ.
        act_momentum: momentum of the running ``input_std`` (``None``: cumulative average).
    """

    def __init__(self, *args, weight_bit_width: int | None = None, act_bit_width: int | None = None,
                 act_signed: bool = False, act_momentum: float | None = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_bit_width = _check_one(weight_bit_width, "weight_bit_width")
        self.act_bit_width = _check_one(act_bit_width, "act_bit_width")
        self._init_input_scale(act_signed, act_momentum)

    def forward(self, x: Tensor) -> Tensor:
        if self.act_bit_width is not None:
            x = quantize_activation(x, self.act_bit_width, self._input_scale(x), self.act_signed)
        w = self.weight if self.weight_bit_width is None else quantize_weight(self.weight, self.weight_bit_width)
        return self._conv_forward(x, w, self.bias)

    def weight_quant_params(self) -> QuantParams | None:
        """The weight quantizer in QONNX terms (``None`` when the weights are float)."""
        if self.weight_bit_width is None:
            return None
        return QuantParams(self.weight_bit_width, float(weight_scale(self.weight, self.weight_bit_width)),
                           zero_point=-0.5, signed=True)

    def act_quant_params(self) -> QuantParams | None:
        """The input-activation quantizer in QONNX terms, at the running ``input_std`` (``None`` when float)."""
        if self.act_bit_width is None:
            return None
        b, sigma = self.act_bit_width, float(self.input_std)
        if self.act_signed:
            return QuantParams(b, WEIGHT_STEPS[b] * sigma, zero_point=-0.5, signed=True)
        return QuantParams(b, ACT_STEPS[b] * sigma, zero_point=0.0, signed=False)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, weight_bit_width={self.weight_bit_width}, "
                f"act_bit_width={self.act_bit_width}, act_signed={self.act_signed}")


class MixedQuantConv2d(_InputScale, nn.Conv2d):
    """A precision mixture over one shared full-precision weight (EdMIPS / ∇QDARTS).

    ``y = conv(Σ_b softmax(γ_act)_b Q^a_b(x), Σ_b softmax(γ_weight)_b Q^w_b(W))``. The precision
    parameters ``gamma_weight`` and ``gamma_act`` are this layer's own (not shared with other
    layers or cells). The first forward records :attr:`macs` (multiply-accumulates per sample),
    from which the expected BitOps ``macs · E[weight bits] · E[act bits]`` follow.

    Args:
        *args, **kwargs: as for ``nn.Conv2d``.
        weight_bits: candidate weight bit-widths, e.g. ``(2, 4)``.
        act_bits: candidate input-activation bit-widths (default: ``weight_bits``).
        act_signed: the input is signed (no ReLU before this conv).
        act_momentum: momentum of the running ``input_std``.
        gamma_init_std: standard deviation of the random initial ``γ`` (0 gives uniform mixtures).
    """

    def __init__(self, *args, weight_bits: Iterable[int] = (2, 4), act_bits: Iterable[int] | None = None,
                 act_signed: bool = False, act_momentum: float | None = 0.1, gamma_init_std: float = 1e-3, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_bits = check_bits(weight_bits, "weight_bits")
        self.act_bits = check_bits(self.weight_bits if act_bits is None else act_bits, "act_bits")
        self.gamma_weight = nn.Parameter(gamma_init_std * torch.randn(len(self.weight_bits)))
        self.gamma_act = nn.Parameter(gamma_init_std * torch.randn(len(self.act_bits)))
        self._init_input_scale(act_signed, act_momentum)
        self.macs: int | None = None

    def forward(self, x: Tensor) -> Tensor:
        pa = F.softmax(self.gamma_act, dim=0)
        pw = F.softmax(self.gamma_weight, dim=0)
        xq = mixed_activation(x, pa, self.act_bits, self._input_scale(x), self.act_signed)
        y = self._conv_forward(xq, mixed_weight(self.weight, pw, self.weight_bits), self.bias)
        if self.macs is None:
            self.macs = self.weight.numel() * y.shape[-2] * y.shape[-1]
        return y

    def expected_weight_bits(self) -> Tensor:
        return expected_bits(self.gamma_weight, self.weight_bits)

    def expected_act_bits(self) -> Tensor:
        return expected_bits(self.gamma_act, self.act_bits)

    def expected_bitops(self) -> Tensor:
        """``macs · E[weight bits] · E[act bits]`` per sample (differentiable in ``γ``)."""
        if self.macs is None:
            raise RuntimeError("MixedQuantConv2d: run one forward pass first (MACs are recorded by the first forward)")
        return self.macs * self.expected_weight_bits() * self.expected_act_bits()

    def chosen_bits(self) -> tuple[int, int]:
        """``(argmax weight bits, argmax act bits)`` — the discretised precision of this layer."""
        return (self.weight_bits[int(self.gamma_weight.argmax())], self.act_bits[int(self.gamma_act.argmax())])

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, weight_bits={self.weight_bits}, act_bits={self.act_bits}, "
                f"act_signed={self.act_signed}")

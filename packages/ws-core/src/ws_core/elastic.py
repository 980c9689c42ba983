"""Elastic layers (OFA's dynamic ops): one max-size weight, any leading slice of it per SubNet.

Every layer holds the weights of its largest setting and runs the *active* setting, stored as plain
integer attributes (``active_in_channels``, ``active_kernel_size``, ...). A SuperNet writes those
attributes in :meth:`~ws_core.supernet.SuperNet.activate`; forwards then read leading slices (views) of
the shared weights, so switching SubNets copies no parameter storage.

Slicing rules (OFA, ``elastic_nn/modules/dynamic_op.py``):

============================  ==========================================================================
layer                         rule
============================  ==========================================================================
:class:`ElasticConv2d`        ``weight[:out, :in]``
:class:`ElasticDepthwiseConv2d`  centre crop ``weight[:c, :, s:e, s:e]``, optionally through OFA's learned
                              kernel-transform matrices (7→5, 5→3, chained, initialised to identity)
:class:`ElasticBatchNorm2d`   ``weight/bias/running_mean/running_var[:c]``
:class:`ElasticLinear`        ``weight[:out, :in]``
:class:`ElasticSqueezeExcite`  ``mid = make_divisible(c // 4, 8)``; its two 1×1 convs slice as above
:class:`ElasticStage`         elastic depth: run the first ``active_depth`` blocks
============================  ==========================================================================

Transformer layers (ViT; the elastic dimensions of AutoFormer, Chen et al., ICCV 2021 — embedding dim,
heads and MLP ratio per block, depth — with DynaBERT's / MatFormer's leading-slice sharing):

==============================  ========================================================================
layer                           rule
==============================  ========================================================================
:class:`ElasticLayerNorm`       elastic embedding dim: ``weight/bias[:d]``; statistics are per token over
                                the active ``d`` channels, so there is nothing to recalibrate
:class:`ElasticPositionEmbedding`  class token and position embedding ``[..., :d]`` (the patch embedding
                                is an :class:`ElasticConv2d` with ``padding=0``)
:class:`ElasticAttention`       elastic heads: the leading ``h`` heads of ``head_dim`` each — rows
                                ``[:h·head_dim]`` of ``q_proj``/``k_proj``/``v_proj``, columns of ``proj``;
                                the head dim and the scale ``head_dim^-1/2`` stay fixed
:class:`ElasticMlp`             elastic hidden width: ``fc1`` rows / ``fc2`` columns ``[:hidden]``
                                (MatFormer's nested FFN neurons)
:class:`ElasticStage`           elastic depth: the first ``d`` blocks, as OFA (and AutoFormer) — a
                                shallower SubNet is a prefix of a deeper one. DynaBERT instead drops
                                evenly spaced layers (LayerDrop's "every other" rule); that does not
                                nest and is not what ws-core's ``depth`` dimension means.
==============================  ========================================================================

Heads and hidden neurons are importance-sorted like OFA's channels (``sort_channels``): the L1 norm of
each head's (neuron's) columns of the next projection, ``proj`` (``fc2``), ranks them, and the rows of
``q/k/v_proj`` (``fc1``) and the columns of ``proj`` (``fc2``) are permuted alike, so the max net's
function is unchanged. DynaBERT ranks heads and neurons by loss sensitivity on data instead; the
permutation is the same.

Each leaf layer also answers three questions the rest of ws-core asks generically:
``active_slices()`` (which region of each tensor the active setting reads), ``active_parameter_shapes()``
(the parameter shapes of the equivalent static layer) and ``to_static()`` (that static layer, with the
weights copied out). Channel sorting (OFA's ``re_organize_middle_weights``) permutes the middle channels
of a block by L1 importance so that leading slices keep the most important channels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ElasticAttention",
    "ElasticBatchNorm2d",
    "ElasticBlock",
    "ElasticConv2d",
    "ElasticDepthwiseConv2d",
    "ElasticLayerNorm",
    "ElasticLinear",
    "ElasticMlp",
    "ElasticModule",
    "ElasticPositionEmbedding",
    "ElasticSqueezeExcite",
    "ElasticStage",
    "PositionEmbedding",
    "centre_slice",
    "depthwise_conv2d",
    "l1_importance",
    "make_divisible",
    "permute_channels_",
    "sort_channels",
    "sorted_order",
]

Slices = tuple[slice, ...]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor`` without going below 90% of it (MobileNet/OFA rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


def centre_slice(max_kernel: int, kernel: int) -> slice:
    """The centre ``kernel`` taps of a ``max_kernel`` axis: (K//2 - k//2, K//2 + k//2 + 1)."""
    start = max_kernel // 2 - kernel // 2
    return slice(start, start + kernel)


def _live_taps(size: int, kernel: int, stride: int, padding: int) -> tuple[int, int, int, int]:
    """Along one axis: the first and last kernel tap that reads an input element for some output,
    and the (before, after) zero padding that keeps the output size when only those taps run."""
    out = (size + 2 * padding - kernel) // stride + 1
    lo = max(0, padding - (out - 1) * stride)
    hi = min(kernel - 1, padding + size - 1)
    before = padding - lo
    after = max(0, (out - 1) * stride + (hi - lo + 1) - size - before)
    return lo, hi, before, after


def depthwise_conv2d(x: Tensor, weight: Tensor, stride: int | tuple[int, int] = 1,
                     padding: int | tuple[int, int] = 0) -> Tensor:
    """``F.conv2d(x, weight, stride=stride, padding=padding, groups=C)`` for a depthwise ``weight``
    ``[C, 1, kh, kw]``, computed with only the kernel taps that can touch the input.

    On inputs smaller than the kernel (a 7×7 kernel on the 2×2 or 1×1 maps at the end of a network
    run at low resolution) most taps only ever multiply zero padding; PyTorch's CPU kernels are slow
    there (~20× slower for 7×7 on 1×1 than the equivalent 1×1). Dropping those taps is exact —
    outputs and gradients are unchanged, the dropped weights get zero gradient as before — and a
    1×1 remainder becomes a per-channel scale.
    """
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    kh, kw = weight.shape[-2:]
    lo_h, hi_h, top, bottom = _live_taps(x.shape[-2], kh, sh, ph)
    lo_w, hi_w, left, right = _live_taps(x.shape[-1], kw, sw, pw)
    if (lo_h, hi_h, lo_w, hi_w) == (0, kh - 1, 0, kw - 1):
        return F.conv2d(x, weight, None, (sh, sw), (ph, pw), 1, weight.shape[0])
    weight = weight[:, :, lo_h:hi_h + 1, lo_w:hi_w + 1]
    if top == bottom and left == right:
        if top == left == 0 and weight.shape[-2:] == (1, 1):
            return x[:, :, ::sh, ::sw] * weight.reshape(1, -1, 1, 1)
        return F.conv2d(x, weight, None, (sh, sw), (top, left), 1, weight.shape[0])
    x = F.pad(x, (left, right, top, bottom))
    return F.conv2d(x, weight, None, (sh, sw), 0, 1, weight.shape[0])


def _fast_set(module: nn.Module, name: str, value: int) -> None:
    # Active settings are plain ints; skip nn.Module.__setattr__'s type dispatch on the actuation path.
    object.__setattr__(module, name, value)


class ElasticModule:
    """Mixin for leaf layers with an active setting (see module docstring)."""

    #: names of parameters only the elastic machinery uses (absent from extracted SubNets)
    elastic_only: tuple[str, ...] = ()
    #: the plain attributes holding the active setting
    active_attrs: tuple[str, ...] = ()

    def active_slices(self) -> dict[str, Slices]:
        raise NotImplementedError

    def active_parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def to_static(self) -> nn.Module:
        raise NotImplementedError


class ElasticConv2d(ElasticModule, nn.Conv2d):
    """A dense conv whose active weight is ``weight[:active_out_channels, :active_in_channels]``.

    Padding is ``kernel_size // 2`` ("same" for odd kernels), as in OFA, unless ``padding`` is given
    (a ViT's patch embedding: kernel = stride = patch size, padding 0).
    """

    active_attrs = ("active_in_channels", "active_out_channels")

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, bias: bool = False,
        padding: int | None = None,
    ) -> None:
        padding = kernel_size // 2 if padding is None else padding
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=padding, bias=bias)
        self.active_in_channels = in_channels
        self.active_out_channels = out_channels

    def configure(self, in_channels: int, out_channels: int) -> None:
        _fast_set(self, "active_in_channels", in_channels)
        _fast_set(self, "active_out_channels", out_channels)

    def active_weight(self) -> Tensor:
        return self.weight[: self.active_out_channels, : self.active_in_channels]

    def forward(self, x: Tensor) -> Tensor:
        out = self.active_out_channels
        bias = None if self.bias is None else self.bias[:out]
        return F.conv2d(x, self.active_weight(), bias, self.stride, self.padding)

    def active_slices(self) -> dict[str, Slices]:
        k = self.kernel_size
        out = {"weight": (slice(0, self.active_out_channels), slice(0, self.active_in_channels),
                          slice(0, k[0]), slice(0, k[1]))}
        if self.bias is not None:
            out["bias"] = (slice(0, self.active_out_channels),)
        return out

    def active_parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {"weight": (self.active_out_channels, self.active_in_channels, *self.kernel_size)}
        if self.bias is not None:
            shapes["bias"] = (self.active_out_channels,)
        return shapes

    def to_static(self) -> nn.Conv2d:
        conv = nn.Conv2d(
            self.active_in_channels, self.active_out_channels, self.kernel_size, self.stride,
            self.padding, bias=self.bias is not None,
            device=self.weight.device, dtype=self.weight.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(self.active_weight())
            if self.bias is not None:
                conv.bias.copy_(self.bias[: self.active_out_channels])
        return conv

    def extra_repr(self) -> str:
        return super().extra_repr() + f", active=({self.active_in_channels}->{self.active_out_channels})"


class ElasticDepthwiseConv2d(ElasticModule, nn.Conv2d):
    """Depthwise conv with elastic channels and an elastic kernel size (centre crop).

    With ``kernel_transform=True`` a smaller kernel is computed from the next larger one through a
    learned ``k'^2 × k'^2`` matrix shared across channels (OFA ``KERNEL_TRANSFORM_MODE=1``): 5×5 =
    centre5(W7)·M₇→₅ and 3×3 = centre3(W5)·M₅→₃, chained, each matrix initialised to the identity.

    Args:
        channels: max channels.
        kernel_sizes: allowed kernel sizes (odd); the weight has the largest.
        stride: spatial stride.
        kernel_transform: learn the transform matrices instead of a plain centre crop.
    """

    active_attrs = ("active_channels", "active_kernel_size")

    def __init__(
        self, channels: int, kernel_sizes: Sequence[int], stride: int = 1, kernel_transform: bool = False
    ) -> None:
        ks = sorted(set(int(k) for k in kernel_sizes), reverse=True)
        if any(k % 2 == 0 or k < 1 for k in ks):
            raise ValueError(f"ElasticDepthwiseConv2d: kernel sizes must be odd and positive, got {list(kernel_sizes)}")
        super().__init__(channels, channels, ks[0], stride, padding=ks[0] // 2, groups=channels, bias=False)
        self.kernel_sizes = tuple(ks)  # descending
        self.active_channels = channels
        self.active_kernel_size = ks[0]
        self.kernel_transform = nn.ParameterDict(
            {f"{a}to{b}": nn.Parameter(torch.eye(b * b)) for a, b in zip(ks[:-1], ks[1:])}
            if kernel_transform else {}
        )
        self.elastic_only = tuple(f"kernel_transform.{name}" for name in self.kernel_transform)

    def configure(self, channels: int, kernel_size: int) -> None:
        _fast_set(self, "active_channels", channels)
        _fast_set(self, "active_kernel_size", kernel_size)

    def active_weight(self) -> Tensor:
        c, k, max_k = self.active_channels, self.active_kernel_size, self.kernel_sizes[0]
        weight = self.weight[:c]
        if k == max_k:
            return weight
        if not len(self.kernel_transform):
            s = centre_slice(max_k, k)
            return weight[:, :, s, s]
        for src, dst in zip(self.kernel_sizes[:-1], self.kernel_sizes[1:]):
            s = centre_slice(src, dst)
            crop = weight[:, :, s, s].reshape(c, dst * dst)
            weight = F.linear(crop, self.kernel_transform[f"{src}to{dst}"]).view(c, 1, dst, dst)
            if dst == k:
                break
        return weight

    def forward(self, x: Tensor) -> Tensor:
        return depthwise_conv2d(x, self.active_weight(), self.stride, self.active_kernel_size // 2)

    def active_slices(self) -> dict[str, Slices]:
        c, k, max_k = self.active_channels, self.active_kernel_size, self.kernel_sizes[0]
        read = k if (k == max_k or not len(self.kernel_transform)) else self.kernel_sizes[1]
        s = centre_slice(max_k, read)
        out = {"weight": (slice(0, c), slice(0, 1), s, s)}
        if len(self.kernel_transform) and k != max_k:
            for src, dst in zip(self.kernel_sizes[:-1], self.kernel_sizes[1:]):
                out[f"kernel_transform.{src}to{dst}"] = (slice(0, dst * dst), slice(0, dst * dst))
                if dst == k:
                    break
        return out

    def active_parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.active_channels, 1, self.active_kernel_size, self.active_kernel_size)}

    def to_static(self) -> nn.Conv2d:
        c, k = self.active_channels, self.active_kernel_size
        conv = nn.Conv2d(c, c, k, self.stride, k // 2, groups=c, bias=False,
                         device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.active_weight())
        return conv

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, kernel_sizes={self.kernel_sizes}, stride={self.stride}, "
                f"active=({self.active_channels}, k={self.active_kernel_size})")


class ElasticBatchNorm2d(ElasticModule, nn.BatchNorm2d):
    """BatchNorm over the leading ``active_num_features`` channels, statistics sliced in place.

    Running statistics of the active channels update through views of the shared buffers, so BN
    recalibration of a SubNet (``ws_core.bn``) writes exactly the region that SubNet reads.
    """

    active_attrs = ("active_num_features",)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.active_num_features = num_features

    def configure(self, num_features: int) -> None:
        _fast_set(self, "active_num_features", num_features)

    def forward(self, x: Tensor) -> Tensor:
        c = self.active_num_features
        if c == self.num_features:
            return super().forward(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean[:c] if track and self.running_mean is not None else None,
            self.running_var[:c] if track and self.running_var is not None else None,
            self.weight[:c] if self.weight is not None else None,
            self.bias[:c] if self.bias is not None else None,
            use_batch, factor, self.eps,
        )

    def active_slices(self) -> dict[str, Slices]:
        c = (slice(0, self.active_num_features),)
        out = {name: c for name in ("weight", "bias", "running_mean", "running_var")
               if getattr(self, name) is not None}
        if self.num_batches_tracked is not None:
            out["num_batches_tracked"] = ()
        return out

    def active_parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {} if self.weight is None else {"weight": (self.active_num_features,),
                                               "bias": (self.active_num_features,)}

    def to_static(self) -> nn.BatchNorm2d:
        c = self.active_num_features
        bn = nn.BatchNorm2d(c, eps=self.eps, momentum=self.momentum, affine=self.affine,
                            track_running_stats=self.track_running_stats,
                            device=self.running_mean.device if self.running_mean is not None else None)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                src = getattr(self, name)
                if src is not None:
                    getattr(bn, name).copy_(src[:c])
            if self.num_batches_tracked is not None:
                bn.num_batches_tracked.copy_(self.num_batches_tracked)
        return bn.train(self.training)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", active={self.active_num_features}"


class ElasticLinear(ElasticModule, nn.Linear):
    """A linear layer whose active weight is ``weight[:active_out_features, :active_in_features]``."""

    active_attrs = ("active_in_features", "active_out_features")

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.active_in_features = in_features
        self.active_out_features = out_features

    def configure(self, in_features: int, out_features: int | None = None) -> None:
        _fast_set(self, "active_in_features", in_features)
        _fast_set(self, "active_out_features", self.out_features if out_features is None else out_features)

    def forward(self, x: Tensor) -> Tensor:
        o, i = self.active_out_features, self.active_in_features
        return F.linear(x, self.weight[:o, :i], None if self.bias is None else self.bias[:o])

    def active_slices(self) -> dict[str, Slices]:
        out = {"weight": (slice(0, self.active_out_features), slice(0, self.active_in_features))}
        if self.bias is not None:
            out["bias"] = (slice(0, self.active_out_features),)
        return out

    def active_parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {"weight": (self.active_out_features, self.active_in_features)}
        if self.bias is not None:
            shapes["bias"] = (self.active_out_features,)
        return shapes

    def to_static(self) -> nn.Linear:
        o, i = self.active_out_features, self.active_in_features
        lin = nn.Linear(i, o, bias=self.bias is not None, device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.weight[:o, :i])
            if self.bias is not None:
                lin.bias.copy_(self.bias[:o])
        return lin


class ElasticBlock:
    """Mixin for blocks of elastic layers: ``configure(*choices)`` with a per-choice actuation plan.

    Subclasses implement ``_configure(*choices)`` by calling their layers' ``configure``. The first
    call for a choice tuple records the resulting active settings of every elastic layer inside the
    block; later calls replay that plan with plain attribute writes (no module lookups), which keeps
    :meth:`~ws_core.supernet.SuperNet.activate` in the tens of microseconds.
    """

    def _configure(self, *choices) -> None:
        raise NotImplementedError

    def __getstate__(self) -> dict:
        # plans hold the *instance dicts* of the block's layers: never carry them into a copy
        state = dict(super().__getstate__())
        state.pop("_plans", None)
        state.pop("_plan_leaves", None)
        return state

    def configure(self, *choices) -> None:
        plans = self.__dict__.get("_plans")
        if plans is None:
            plans = {}
            leaves = tuple(m for m in self.modules() if isinstance(m, ElasticModule))
            object.__setattr__(self, "_plans", plans)
            object.__setattr__(self, "_plan_leaves", leaves)
        plan = plans.get(choices)
        if plan is None:
            self._configure(*choices)
            # (instance __dict__, attribute, value): active settings are plain instance attributes
            plans[choices] = tuple((m.__dict__, a, m.__dict__[a]) for m in self._plan_leaves for a in m.active_attrs)
            return
        for attrs, name, value in plan:
            attrs[name] = value


class ElasticSqueezeExcite(nn.Module):
    """Squeeze-and-Excitation with elastic channels (OFA ``DynamicSE``).

    ``mid = make_divisible(channels // reduction, divisor)`` for the *active* channel count; the gate is
    a hard sigmoid, the squeeze activation ReLU, as in MobileNetV3.
    """

    def __init__(self, channels: int, reduction: int = 4, divisor: int = 8) -> None:
        super().__init__()
        self.reduction, self.divisor = reduction, divisor
        self._mid: dict[int, int] = {}
        mid = self.mid_channels(channels)
        self.reduce = ElasticConv2d(channels, mid, 1, bias=True)
        self.expand = ElasticConv2d(mid, channels, 1, bias=True)

    def mid_channels(self, channels: int) -> int:
        mid = self._mid.get(channels)
        if mid is None:
            mid = self._mid[channels] = make_divisible(channels // self.reduction, self.divisor)
        return mid

    def configure(self, channels: int) -> None:
        mid = self._mid.get(channels) or self.mid_channels(channels)
        reduce, expand = self.__dict__.get("_convs") or self._cache_convs()
        reduce.configure(channels, mid)
        expand.configure(mid, channels)

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state.pop("_convs", None)
        return state

    def _cache_convs(self) -> tuple[ElasticConv2d, ElasticConv2d]:
        convs = (self.reduce, self.expand)
        object.__setattr__(self, "_convs", convs)
        return convs

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.expand(F.relu(self.reduce(s), inplace=True))
        return x * F.hardsigmoid(s)

    def sort_mid_channels(self) -> None:
        """Sort the SE's hidden channels by L1 importance in ``expand`` (function-preserving)."""
        idx = torch.argsort(l1_importance(self.expand.weight, dim=1), descending=True, stable=True)
        permute_channels_(self.reduce, idx, dim=0)
        permute_channels_(self.expand, idx, dim=1)


class ElasticStage(nn.Module):
    """A stage of blocks with elastic depth: the forward runs the first ``active_depth`` blocks."""

    def __init__(self, blocks: Iterable[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.active_depth = len(self.blocks)

    def configure(self, depth: int) -> None:
        _fast_set(self, "active_depth", depth)

    @property
    def active_blocks(self) -> list[nn.Module]:
        return list(self.blocks)[: self.active_depth]

    def forward(self, x: Tensor) -> Tensor:
        blocks = self.blocks
        for i in range(self.active_depth):
            x = blocks[i](x)
        return x

    def extra_repr(self) -> str:
        return f"active_depth={self.active_depth}"


# Transformer layers ------------------------------------------------------------------------------

class ElasticLayerNorm(ElasticModule, nn.LayerNorm):
    """LayerNorm over the leading ``active_num_features`` channels (elastic embedding dim).

    Statistics are computed per token over the active channels; only the affine ``weight[:d]`` /
    ``bias[:d]`` are shared slices, so unlike BatchNorm a SubNet needs no recalibration.
    """

    active_attrs = ("active_num_features",)

    def __init__(self, num_features: int, eps: float = 1e-6, bias: bool = True) -> None:
        super().__init__(num_features, eps=eps, bias=bias)
        self.active_num_features = num_features

    def configure(self, num_features: int) -> None:
        _fast_set(self, "active_num_features", num_features)

    def forward(self, x: Tensor) -> Tensor:
        d = self.active_num_features
        weight = None if self.weight is None else self.weight[:d]
        bias = None if self.bias is None else self.bias[:d]
        return F.layer_norm(x, (d,), weight, bias, self.eps)

    def active_slices(self) -> dict[str, Slices]:
        c = (slice(0, self.active_num_features),)
        return {name: c for name in ("weight", "bias") if getattr(self, name) is not None}

    def active_parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: (self.active_num_features,) for name in ("weight", "bias") if getattr(self, name) is not None}

    def to_static(self) -> nn.LayerNorm:
        d = self.active_num_features
        ref = self.weight if self.weight is not None else None
        norm = nn.LayerNorm(d, eps=self.eps, elementwise_affine=self.elementwise_affine, bias=self.bias is not None,
                            device=None if ref is None else ref.device, dtype=None if ref is None else ref.dtype)
        with torch.no_grad():
            if self.weight is not None:
                norm.weight.copy_(self.weight[:d])
            if self.bias is not None:
                norm.bias.copy_(self.bias[:d])
        return norm

    def extra_repr(self) -> str:
        return super().extra_repr() + f", active={self.active_num_features}"


class PositionEmbedding(nn.Module):
    """Patch-embedding map → tokens: ``[B, D, H, W]`` → ``[B, 1 + H·W, D]`` with a class token in front
    and a learned position embedding added (timm ``VisionTransformer._pos_embed``, ``class_token=True``).
    """

    num_prefix_tokens = 1

    def __init__(self, embed_dim: int, num_patches: int, device=None, dtype=None) -> None:
        super().__init__()
        self.embed_dim, self.num_patches = embed_dim, num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim, device=device, dtype=dtype))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim, device=device, dtype=dtype))

    def _embed(self, x: Tensor, cls_token: Tensor, pos_embed: Tensor) -> Tensor:
        if x.dim() == 4:
            x = x.flatten(2).transpose(1, 2)
        if x.shape[1] != self.num_patches:
            raise ValueError(f"{type(self).__name__}: expected {self.num_patches} patches, got {x.shape[1]} "
                             f"(the input size must be the one the position embedding was built for)")
        x = torch.cat([cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + pos_embed

    def forward(self, x: Tensor) -> Tensor:
        return self._embed(x, self.cls_token, self.pos_embed)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_patches={self.num_patches}"


class ElasticPositionEmbedding(ElasticModule, PositionEmbedding):
    """:class:`PositionEmbedding` with an elastic embedding dim: ``cls_token[..., :d]``, ``pos_embed[..., :d]``."""

    active_attrs = ("active_embed_dim",)

    def __init__(self, embed_dim: int, num_patches: int) -> None:
        super().__init__(embed_dim, num_patches)
        self.active_embed_dim = embed_dim

    def configure(self, embed_dim: int) -> None:
        _fast_set(self, "active_embed_dim", embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        d = self.active_embed_dim
        return self._embed(x, self.cls_token[..., :d], self.pos_embed[..., :d])

    def active_slices(self) -> dict[str, Slices]:
        d = slice(0, self.active_embed_dim)
        return {"cls_token": (slice(0, 1), slice(0, 1), d),
                "pos_embed": (slice(0, 1), slice(0, self.num_patches + 1), d)}

    def active_parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        d = self.active_embed_dim
        return {"cls_token": (1, 1, d), "pos_embed": (1, self.num_patches + 1, d)}

    def to_static(self) -> PositionEmbedding:
        d = self.active_embed_dim
        static = PositionEmbedding(d, self.num_patches, device=self.pos_embed.device, dtype=self.pos_embed.dtype)
        with torch.no_grad():
            static.cls_token.copy_(self.cls_token[..., :d])
            static.pos_embed.copy_(self.pos_embed[..., :d])
        return static

    def extra_repr(self) -> str:
        return super().extra_repr() + f", active={self.active_embed_dim}"


def _active_out(linear: nn.Linear) -> int:
    return linear.__dict__.get("active_out_features", linear.out_features)


class ElasticAttention(nn.Module):
    """Multi-head self-attention with an elastic number of heads and an elastic embedding dim.

    ``q_proj``, ``k_proj``, ``v_proj`` (``dim → heads·head_dim``) and ``proj`` (``heads·head_dim → dim``) are
    :class:`ElasticLinear`; a SubNet with ``h`` heads reads the leading ``h·head_dim`` rows of the first
    three and columns of ``proj`` — the leading heads, each of them whole. The number of heads is read
    from ``q_proj``'s active width, so this module holds no active setting of its own. Separate q/k/v
    projections (timm's ``qkv`` split in three) keep every head's rows a leading slice.

    Args:
        dim: max embedding dim.
        num_heads: max heads.
        head_dim: per-head dim (default ``dim // num_heads``); fixed across SubNets, as in AutoFormer.
        qkv_bias: biases on ``q/k/v_proj``.
        head_choices: the allowed head counts (for nested sorting); default ``(num_heads,)``.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int | None = None, qkv_bias: bool = True,
                 head_choices: Sequence[int] | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim if head_dim is not None else dim // num_heads
        if self.head_dim < 1:
            raise ValueError(f"ElasticAttention: head_dim must be >= 1, got {self.head_dim} (dim={dim}, "
                             f"num_heads={num_heads})")
        self.head_choices = tuple(sorted(set(head_choices or (num_heads,))))
        if self.head_choices[0] < 1 or self.head_choices[-1] > num_heads:
            raise ValueError(f"ElasticAttention: head choices must be in [1, {num_heads}], "
                             f"got {list(self.head_choices)}")
        inner = num_heads * self.head_dim
        self.q_proj = ElasticLinear(dim, inner, bias=qkv_bias)
        self.k_proj = ElasticLinear(dim, inner, bias=qkv_bias)
        self.v_proj = ElasticLinear(dim, inner, bias=qkv_bias)
        self.proj = ElasticLinear(inner, dim)

    def configure(self, dim: int, num_heads: int) -> None:
        inner = num_heads * self.head_dim
        self.q_proj.configure(dim, inner)
        self.k_proj.configure(dim, inner)
        self.v_proj.configure(dim, inner)
        self.proj.configure(inner, dim)

    @property
    def active_heads(self) -> int:
        """Heads of the active SubNet (from ``q_proj``'s active width)."""
        return _active_out(self.q_proj) // self.head_dim

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        hd = self.head_dim
        q = self.q_proj(x).view(b, n, -1, hd).transpose(1, 2)
        k = self.k_proj(x).view(b, n, -1, hd).transpose(1, 2)
        v = self.v_proj(x).view(b, n, -1, hd).transpose(1, 2)
        x = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / sqrt(head_dim)) v
        return self.proj(x.transpose(1, 2).reshape(b, n, -1))

    def attention_macs(self, tokens: int) -> int:
        """MACs of ``q kᵀ`` and ``A v`` for the active heads over ``tokens`` tokens: ``2 · N² · h · head_dim``
        (the sequence-length term the projections' MACs do not contain; ``ws_core.cost`` adds it)."""
        return 2 * tokens * tokens * _active_out(self.q_proj)

    def nested_widths(self) -> list[int]:
        return list(self.head_choices)

    def sort_channels(self, nested_widths: Sequence[int] = ()) -> None:
        """Sort heads by the L1 norm of their columns of ``proj`` (function-preserving; OFA's rule per head).

        ``nested_widths`` are head counts: heads stay within their nested groups.
        """
        hd = self.head_dim
        importance = l1_importance(self.proj.weight, dim=1).view(self.num_heads, hd).sum(dim=1)
        heads = sorted_order(importance, nested_widths)
        idx = (heads[:, None] * hd + torch.arange(hd, device=heads.device)).reshape(-1)
        for lin in (self.q_proj, self.k_proj, self.v_proj):
            permute_channels_(lin, idx, dim=0)
        permute_channels_(self.proj, idx, dim=1)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, head_choices={self.head_choices}"


class ElasticMlp(nn.Module):
    """Transformer MLP ``fc1 → GELU → fc2`` with an elastic hidden width (leading neurons, MatFormer) and an
    elastic embedding dim; ``hidden_choices`` are the allowed hidden widths (for nested sorting)."""

    def __init__(self, dim: int, hidden: int, hidden_choices: Sequence[int] | None = None) -> None:
        super().__init__()
        self.hidden_choices = tuple(sorted(set(hidden_choices or (hidden,))))
        if self.hidden_choices[0] < 1 or self.hidden_choices[-1] > hidden:
            raise ValueError(f"ElasticMlp: hidden widths must be in [1, {hidden}], got {list(self.hidden_choices)}")
        self.fc1 = ElasticLinear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = ElasticLinear(hidden, dim)

    def configure(self, dim: int, hidden: int) -> None:
        self.fc1.configure(dim, hidden)
        self.fc2.configure(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def nested_widths(self) -> list[int]:
        return list(self.hidden_choices)

    def sort_channels(self, nested_widths: Sequence[int] = ()) -> None:
        """Sort hidden neurons by the L1 norm of their ``fc2`` columns (function-preserving)."""
        idx = sorted_order(l1_importance(self.fc2.weight, dim=1), nested_widths)
        permute_channels_(self.fc1, idx, dim=0)
        permute_channels_(self.fc2, idx, dim=1)


# Channel sorting ----------------------------------------------------------------------------------

def l1_importance(weight: Tensor, dim: int) -> Tensor:
    """Σ|w| over every axis but ``dim``: OFA's importance of the channels along ``dim``."""
    dims = [d for d in range(weight.dim()) if d != dim]
    return weight.detach().abs().sum(dim=dims)


@torch.no_grad()
def permute_channels_(module: nn.Module, idx: Tensor, dim: int = 0) -> None:
    """Reorder ``module``'s channels along ``dim`` (0 = outputs, 1 = inputs) in place.

    Handles convs/linears (weight, and bias for ``dim=0``) and batch norms (affine parameters and
    running statistics). The permutation is applied to the max-size tensors, so it is only
    function-preserving when the producer and consumer of those channels are permuted alike.
    """
    ref = module.weight if getattr(module, "weight", None) is not None else module.running_mean
    idx = idx.to(ref.device)
    if isinstance(module, nn.BatchNorm2d):
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(module, name)
            if t is not None:
                t.copy_(t.index_select(0, idx))
        return
    module.weight.copy_(module.weight.index_select(dim, idx))
    if dim == 0 and getattr(module, "bias", None) is not None:
        module.bias.copy_(module.bias.index_select(0, idx))


def sorted_order(importance: Tensor, nested_widths: Sequence[int] = ()) -> Tensor:
    """Descending-importance order that keeps nested width groups intact (OFA's ``-k·1e5`` offsets).

    With ``nested_widths = (w1, w2, ...)`` (ascending), channels ``[w_i, w_{i+1})`` stay after
    channels ``[0, w_i)``: sorting happens only *within* each group, so SubNets of an earlier
    width phase keep their channels.
    """
    importance = importance.clone().double()
    bounds = sorted(w for w in set(nested_widths) if 0 < w < importance.numel())
    for k, w in enumerate(bounds):
        importance[w:] -= (k + 1) * 1e5 * max(1.0, float(importance.abs().max()))
    return torch.argsort(importance, descending=True, stable=True)


def sort_channels(net: nn.Module, nested: bool = False) -> int:
    """Importance-sort the middle channels of every block of ``net`` that supports it.

    Blocks opt in by defining ``sort_channels(nested_widths)``. With ``nested=True`` the widths of the
    block's expand choices are kept as nested groups (OFA's staged width phases). The max net's
    function is unchanged. Returns the number of blocks sorted.
    """
    count = 0
    for module in net.modules():
        if module is not net and hasattr(module, "sort_channels") and callable(module.sort_channels):
            module.sort_channels(nested_widths=module.nested_widths() if nested else ())
            count += 1
    return count

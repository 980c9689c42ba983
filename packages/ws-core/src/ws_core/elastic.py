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
    "ElasticBatchNorm2d",
    "ElasticBlock",
    "ElasticConv2d",
    "ElasticDepthwiseConv2d",
    "ElasticLinear",
    "ElasticModule",
    "ElasticSqueezeExcite",
    "ElasticStage",
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

    Padding is ``kernel_size // 2`` ("same" for odd kernels), as in OFA.
    """

    active_attrs = ("active_in_channels", "active_out_channels")

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, bias: bool = False
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=bias)
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

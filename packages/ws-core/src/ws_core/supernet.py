"""``SuperNet``: one module holding the weights of every SubNet of its :class:`SearchSpace`.

A SuperNet is laid out as ``stem → stages → head`` (like timm's ``forward_features`` /
``forward_head``): ``stages`` is an ``nn.Sequential`` of :class:`~ws_core.elastic.ElasticStage`, and
every elastic layer is a ``ws_core.elastic`` module. Subclasses define ``space`` and one method,
``_configure(cfg)``, that writes each elastic layer's active setting for a canonical config. The
rest is generic and shared by every SuperNet:

* :meth:`SuperNet.activate` — route later forwards through a SubNet, in place (no weight copies);
* :meth:`SuperNet.weight_slices` — the region of every tensor a SubNet reads;
* :meth:`SuperNet.extract` — a standalone :class:`SubNet` of plain PyTorch layers with copied weights;
* timm's feature-extraction and training API — ``feature_info``, :meth:`SuperNet.forward_intermediates`,
  :meth:`SuperNet.prune_intermediate_layers` (so ``timm.create_model(name, features_only=True)`` works)
  and :meth:`SuperNet.set_grad_checkpointing`.

Feature extraction: a subclass declares ``feature_info`` as timm models do — one dict (``num_chs``,
``reduction``, ``module``) for the stem output and one per stage — with the **max** SubNet's channels.
A stage's feature is the output of its last *active* block, so skipped blocks are never returned and the
number of features does not depend on the depth; the tensors have the *active* SubNet's channels (at most
``num_chs``). ``timm.create_model(name, features_only=True)`` wraps the SuperNet in timm's
``FeatureGetterNet``; ``feats.model.activate(cfg)`` picks the SubNet whose features it returns.

Elastic resolution: when the search space's ``resolution`` dimension has more than one choice, a
SuperNet (and a SubNet extracted from it) resizes its input bilinearly to the active SubNet's
resolution before the stem, so a SubNet runs at — and costs — its own resolution whatever size the
data arrives at (OFA feeds each SubNet its resolution; here one loader serves every SubNet).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from timm.models._features import feature_take_indices
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .config import SubNetConfig
from .elastic import ElasticLinear, ElasticModule, ElasticStage, Slices, sort_channels
from .space import SearchSpace

__all__ = ["ClassifierHead", "SubNet", "SuperNet", "iter_active_modules"]


class ClassifierHead(nn.Module):
    """``features → global average pool → pre_logits → dropout → classifier`` (timm's head shape)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        features: nn.Module | None = None,
        pre_logits: nn.Module | None = None,
        num_features: int | None = None,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.features = features if features is not None else nn.Identity()
        self.pre_logits = pre_logits if pre_logits is not None else nn.Identity()
        self.num_features = num_features if num_features is not None else in_features
        self.drop = nn.Dropout(drop_rate)
        self.classifier = ElasticLinear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.classifier = ElasticLinear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.features(x)
        x = x.mean((2, 3), keepdim=True)
        x = self.pre_logits(x).flatten(1)
        if pre_logits:
            return x
        return self.classifier(self.drop(x))


class _StemStagesHead(nn.Module):
    """Shared forward of SuperNets and extracted SubNets (timm-style feature/head split)."""

    stem: nn.Module
    stages: nn.Sequential
    head: ClassifierHead

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def input_resolution(self) -> int | None:
        """The side the input is resized to (``None``: run at the size given)."""
        return None

    def _resize_input(self, x: Tensor) -> Tensor:
        size = self.input_resolution()
        if size is not None and (x.shape[-2] != size or x.shape[-1] != size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(self._resize_input(x)))

    def get_classifier(self) -> nn.Module:
        return self.head.classifier


def iter_active_modules(root: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(qualified name, module)`` for every module the active SubNet runs.

    Skips blocks beyond each stage's ``active_depth``; does not descend into elastic leaf layers
    (their ``active_slices`` cover their own sub-tensors, e.g. kernel-transform matrices).
    """
    yield prefix, root
    if isinstance(root, ElasticModule):
        return
    if isinstance(root, ElasticStage):
        children: Any = ((f"blocks.{i}", root.blocks[i]) for i in range(root.active_depth))
    else:
        children = root.named_children()
    for name, child in children:
        yield from iter_active_modules(child, f"{prefix}.{name}" if prefix else name)


def _own_tensors(module: nn.Module) -> Iterator[tuple[str, Tensor]]:
    for name, p in module._parameters.items():
        if p is not None:
            yield name, p
    for name, b in module._buffers.items():
        if b is not None and name not in module._non_persistent_buffers_set:
            yield name, b


def _static_copy(module: nn.Module) -> nn.Module:
    """A copy of the active part of ``module`` with elastic layers replaced by static ones."""
    if isinstance(module, ElasticModule):
        static = module.to_static()
        static.train(module.training)
        return static
    if isinstance(module, ElasticStage):
        if not module.active_depth:  # a skipped stage (e.g. OFA-ResNet's input-stem block at stem_depth 0)
            return nn.Identity()
        seq = nn.Sequential(*(_static_copy(b) for b in module.active_blocks))
        seq.train(module.training)
        return seq
    new = module.__class__.__new__(module.__class__)
    state = dict(module.__dict__)
    for key, value in state.items():  # hooks must not be shared with the SuperNet
        if "hooks" in key and isinstance(value, dict):
            state[key] = type(value)()
    state["_parameters"] = {
        k: None if p is None else nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
        for k, p in module._parameters.items()
    }
    state["_buffers"] = {k: None if b is None else b.detach().clone() for k, b in module._buffers.items()}
    state["_non_persistent_buffers_set"] = set(module._non_persistent_buffers_set)
    state["_modules"] = {k: None if m is None else _static_copy(m) for k, m in module._modules.items()}
    new.__dict__.update(state)
    return new


class SubNet(_StemStagesHead):
    """A standalone SubNet extracted from a SuperNet: plain PyTorch layers with their own weights.

    ``config`` is the :class:`SubNetConfig` it was extracted with.
    """

    def __init__(self, stem: nn.Module, stages: nn.Sequential, head: ClassifierHead, config: SubNetConfig,
                 resolution: int | None = None):
        super().__init__()
        self.stem, self.stages, self.head = stem, stages, head
        self.config = config
        self.resolution = resolution  # input side it resizes to (its SuperNet's resolution was elastic)
        self.num_classes = getattr(head.classifier, "out_features", 0)

    def input_resolution(self) -> int | None:
        return self.resolution

    def extra_repr(self) -> str:
        return f"id={self.config.id}"


class SuperNet(_StemStagesHead):
    """Base class of weight-shared SuperNets (see module docstring for the contract).

    Subclasses set ``self.space`` and build ``stem``, ``stages`` and ``head``, implement
    ``_configure(cfg)`` and call ``self.activate(self.space.max())`` at the end of ``__init__``.
    """

    space: SearchSpace
    feature_info: list[dict[str, Any]]
    _validated_cache_size = 4096

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "_active", None)
        object.__setattr__(self, "_validated", OrderedDict())
        self.grad_checkpointing = False

    # Actuation ------------------------------------------------------------------------------------
    def _configure(self, cfg: SubNetConfig) -> None:
        """Write every elastic layer's active setting for the canonical ``cfg``."""
        raise NotImplementedError

    def _canonical(self, cfg: Mapping[str, Any] | SubNetConfig) -> SubNetConfig:
        key = cfg if isinstance(cfg, SubNetConfig) else SubNetConfig(cfg) if isinstance(cfg, Mapping) else None
        if key is None:
            raise TypeError(f"expected a SubNetConfig or a dict of dimensions, got {type(cfg).__name__}")
        cache = self._validated
        canonical = cache.get(key)
        if canonical is None:
            canonical = self.space.validate(key)
            cache[key] = canonical
            if len(cache) > self._validated_cache_size:
                cache.popitem(last=False)
        return canonical

    def activate(self, cfg: Mapping[str, Any] | SubNetConfig) -> SubNetConfig:
        """Route every later forward through the SubNet ``cfg``, in place; copies no weight.

        Returns the canonical config. Invalid configs raise ``ValueError`` (naming the dimension,
        the allowed choices and the value received) and leave the active SubNet unchanged.
        """
        canonical = self._canonical(cfg)
        self._configure(canonical)
        object.__setattr__(self, "_active", canonical)
        return canonical

    def mark_active(self, cfg: Mapping[str, Any] | SubNetConfig) -> SubNetConfig:
        """Record ``cfg`` as the active SubNet without configuring any layer, for an actuator that routes
        the forward itself (ws-serve's ``SubNetAct``); :attr:`active` then reports it.

        A config seen before costs one dictionary lookup; others are validated as by :meth:`activate`.
        Returns the canonical config.
        """
        canonical = self._canonical(cfg)
        object.__setattr__(self, "_active", canonical)
        return canonical

    @property
    def active(self) -> SubNetConfig:
        """The active :class:`SubNetConfig`."""
        return self._active

    def input_resolution(self) -> int | None:
        """The active SubNet's resolution when the space's resolution is elastic, else ``None``."""
        space = self.space
        if "resolution" not in space.names or len(space["resolution"].choices) < 2:
            return None
        return int(self._active["resolution"])

    @contextmanager
    def subnet(self, cfg: Mapping[str, Any] | SubNetConfig | None) -> Iterator[SubNetConfig]:
        """Context manager: activate ``cfg`` (``None``: keep the active one), restore on exit."""
        previous = self._active
        try:
            yield self.activate(previous if cfg is None else cfg)
        finally:
            self.activate(previous)

    # Generic views of a SubNet --------------------------------------------------------------------
    def weight_slices(self, cfg: Mapping[str, Any] | SubNetConfig | None = None) -> dict[str, Slices]:
        """For every state-dict tensor the SubNet reads, the region it reads (one ``slice`` per dim).

        Tensors of skipped blocks are absent; kernel dims give the centre crop; scalar buffers map to
        ``()``. ``extract``, federated aggregation and SubGraph sizing all build on this.
        """
        out: dict[str, Slices] = {}
        with self.subnet(cfg):
            for name, module in iter_active_modules(self):
                if isinstance(module, ElasticModule):
                    local = module.active_slices()
                else:
                    local = {n: tuple(slice(0, s) for s in t.shape) for n, t in _own_tensors(module)}
                for n, s in local.items():
                    out[f"{name}.{n}" if name else n] = s
        return out

    def extract(self, cfg: Mapping[str, Any] | SubNetConfig | None = None) -> SubNet:
        """A standalone :class:`SubNet` with the SubNet's weights and BN statistics copied out.

        In eval mode its outputs equal this SuperNet's with ``cfg`` active. ``None``: the active SubNet.
        """
        with self.subnet(cfg) as canonical:
            sub = SubNet(_static_copy(self.stem), _static_copy(self.stages), _static_copy(self.head), canonical,
                         self.input_resolution())
        sub.pretrained_cfg = copy.deepcopy(getattr(self, "pretrained_cfg", {}))
        return sub.train(self.training)

    def elastic_only_parameters(self) -> list[str]:
        """Names of parameters used only by the elastic machinery (e.g. kernel-transform matrices)."""
        names = []
        for prefix, module in self.named_modules():
            if isinstance(module, ElasticModule):
                names += [f"{prefix}.{n}" if prefix else n for n in module.elastic_only]
        return names

    def sort_channels(self, nested: bool = False) -> int:
        """OFA channel sorting of every block (function of the max net unchanged); see ``ws_core.elastic``."""
        with torch.no_grad():
            return sort_channels(self, nested=nested)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes)
        self.activate(self._active)

    # timm model API: gradient checkpointing and feature extraction --------------------------------
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of every block (timm's ``set_grad_checkpointing``).

        In training, each active block's activations are recomputed in the backward pass
        (``torch.utils.checkpoint``, non-reentrant) instead of stored; the gradients are those of the plain
        run. The recomputation uses the layers' settings at backward time, so activate the next SubNet
        after ``backward()``; a BatchNorm in training mode updates its running statistics once more
        during the recomputation (as in every timm model). Blocks with a ``grad_checkpointing`` attribute
        of their own checkpoint themselves and get the flag.
        """
        self.grad_checkpointing = bool(enable)
        for stage in self.stages:
            for block in stage.blocks:
                if hasattr(block, "grad_checkpointing"):
                    block.grad_checkpointing = bool(enable)

    def _forward_stage(self, stage: nn.Module, x: Tensor) -> Tensor:
        if not (self.grad_checkpointing and torch.is_grad_enabled()):
            return stage(x)
        for i in range(stage.active_depth):
            block = stage.blocks[i]
            x = block(x) if hasattr(block, "grad_checkpointing") else checkpoint(block, x, use_reentrant=False)
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        if not (self.grad_checkpointing and torch.is_grad_enabled()):
            return self.stages(self.stem(x))
        x = self.stem(x)
        for stage in self.stages:
            x = self._forward_stage(stage, x)
        return x

    def _feature_indices(self, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
        n = len(self.feature_info)
        try:
            return feature_take_indices(n, indices)
        except AssertionError as e:
            raise ValueError(f"{type(self).__name__}: {e} (feature_info has {n} entries)") from None

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """timm's ``forward_intermediates``: the features ``indices`` of ``feature_info`` for the active SubNet.

        Index 0 is the stem output, index ``i`` the output of stage ``i - 1`` — its last *active* block.
        ``indices``: ``None`` all, an int the last n, a sequence those (negative from the end). The input is
        resized to the active SubNet's resolution first, as in ``forward``. ``norm`` is accepted for timm's
        signature (these SuperNets have no norm after the stages).
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take, max_index = self._feature_indices(indices)
        x = self.stem(self._resize_input(x))
        intermediates = [x] if 0 in take else []
        stages = self.stages[:max_index] if (stop_early or intermediates_only) else self.stages
        for i, stage in enumerate(stages, start=1):
            x = self._forward_stage(stage, x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """timm's feature-extraction pruning: with ``prune_head`` the head (pre-logits layers and classifier)
        goes; every stage stays, since elastic depth and ``activate`` need all blocks. Returns the indices."""
        take, _ = self._feature_indices(indices)
        if prune_head and isinstance(self.head, ClassifierHead):
            self.head.features, self.head.pre_logits = nn.Identity(), nn.Identity()
            self.num_features = self.head.num_features = self.feature_info[-1]["num_chs"]
            self.reset_classifier(0)
        return take

    # Safe loading ---------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict`` that checks every key and shape *before* copying anything.

        A mismatched state dict raises ``RuntimeError`` listing the problems and leaves the model untouched.
        """
        own = self.state_dict(keep_vars=True)
        problems = [
            f"{k}: checkpoint shape {tuple(v.shape)} != model shape {tuple(own[k].shape)}"
            for k, v in state_dict.items()
            if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)
        ]
        if strict:
            missing = sorted(set(own) - set(state_dict))
            unexpected = sorted(set(state_dict) - set(own))
            if missing:
                problems.append(f"missing keys ({len(missing)}): {missing[:8]}{' ...' if len(missing) > 8 else ''}")
            if unexpected:
                problems.append(
                    f"unexpected keys ({len(unexpected)}): {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
                )
        if problems:
            shown = "\n  ".join(problems[:12])
            more = f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else ""
            raise RuntimeError(
                f"state dict does not fit {type(self).__name__} (model left unchanged):\n  {shown}{more}"
            )
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.activate(self._active)
        return result

    def load_pretrained(self, path: str) -> None:
        """Load a ws-core checkpoint (timm calls this with ``pretrained_cfg_overlay=dict(file=..., custom_load=True)``).
        """
        from .checkpoint import load_checkpoint

        load_checkpoint(self, path)

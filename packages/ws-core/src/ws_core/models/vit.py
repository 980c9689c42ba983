"""Elastic Vision Transformer SuperNet (ViT, Dosovitskiy et al., ICLR 2021; timm ``VisionTransformer``).

The search space is AutoFormer's (Chen et al., "AutoFormer: Searching Transformers for Visual
Recognition", ICCV 2021): one embedding dim for the whole SubNet, a number of heads and an MLP ratio per
block, and the depth. Weights are shared by leading slices (AutoFormer's weight entanglement, DynaBERT's
and MatFormer's nesting), with the elastic layers of ``ws_core.elastic``:

* ``embed_dim`` (net) — leading channels of the patch embedding, class token, position embedding, every
  LayerNorm and every projection's input (:class:`~ws_core.elastic.ElasticLayerNorm`: per-token
  statistics, nothing to recalibrate);
* ``num_heads`` (block) — the leading heads, ``head_dim`` fixed (:class:`~ws_core.elastic.ElasticAttention`);
* ``mlp_ratio`` (block) — MLP hidden width ``round(mlp_ratio × embed_dim)`` as in AutoFormer, the leading
  neurons (:class:`~ws_core.elastic.ElasticMlp`);
* ``depth`` (one stage of blocks) — the first ``d`` blocks (:class:`~ws_core.elastic.ElasticStage`);
* ``resolution`` — fixed (the position embedding is learned for one patch grid).

Layout as every ws-core SuperNet, ``stem → stages → head``: the stem is the patch embedding
(:class:`~ws_core.elastic.ElasticConv2d`, kernel = stride = patch size) and the class token + position
embedding; ``stages[0]`` holds the transformer blocks; the head is the pooling (class token, or the mean
of the patch tokens) with the final LayerNorm, dropout and the classifier. So ``forward_features`` returns
the tokens *before* the final norm (timm's ``VisionTransformer.forward_features`` returns them after it);
``forward_head`` applies it.

A dense timm ViT of the max SubNet's shape loads as the max SubNet (:func:`checkpoint_filter_fn` maps the
state dict and splits timm's fused ``qkv``): ``timm.create_model("ws_vit_tiny_patch16_224", pretrained=True,
pretrained_cfg_overlay=dict(file="vit_tiny_patch16_224.safetensors"))``.

Registered in timm: ``timm.create_model("ws_vit_nano_patch4_28", num_classes=10)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..config import SubNetConfig
from ..elastic import (
    ElasticAttention,
    ElasticBlock,
    ElasticConv2d,
    ElasticLayerNorm,
    ElasticLinear,
    ElasticMlp,
    ElasticPositionEmbedding,
    ElasticStage,
)
from ..space import Dimension, SearchSpace
from ..supernet import SuperNet
from ._common import FASHION_MNIST_MEAN, FASHION_MNIST_STD

__all__ = ["ElasticVisionTransformer", "TokenClassifierHead", "TransformerBlock", "checkpoint_filter_fn"]


def _hidden(mlp_ratio: float, embed_dim: int) -> int:
    """MLP hidden width of a block: ``round(mlp_ratio × embed_dim)`` (AutoFormer)."""
    return round(mlp_ratio * embed_dim)


GLOBAL_POOLS = ("token", "avg")


def _check_pool(global_pool: str) -> str:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be one of {list(GLOBAL_POOLS)}, got {global_pool!r}")
    return global_pool


class ViTStem(nn.Module):
    """Patch embedding (a conv with kernel = stride = patch size) → class token + position embedding."""

    def __init__(self, patch_embed: nn.Module, pos: nn.Module) -> None:
        super().__init__()
        self.patch_embed = patch_embed
        self.pos = pos

    def forward(self, x: Tensor) -> Tensor:
        return self.pos(self.patch_embed(x))


class TransformerBlock(ElasticBlock, nn.Module):
    """Pre-norm transformer block (timm ``Block``): ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    ``configure(embed_dim, num_heads, mlp_ratio)`` sets the active SubNet of the block.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, mlp_ratios: Sequence[float],
                 head_choices: Sequence[int], embed_dims: Sequence[int], qkv_bias: bool = True) -> None:
        super().__init__()
        self.mlp_ratios = tuple(sorted(mlp_ratios))
        hidden = _hidden(self.mlp_ratios[-1], dim)
        self.norm1 = ElasticLayerNorm(dim)
        self.attn = ElasticAttention(dim, num_heads, head_dim, qkv_bias, head_choices)
        self.norm2 = ElasticLayerNorm(dim)
        self.mlp = ElasticMlp(dim, hidden, sorted({_hidden(r, d) for r in self.mlp_ratios for d in embed_dims}))
        self.grad_checkpointing = False

    def _configure(self, embed_dim: int, num_heads: int, mlp_ratio: float) -> None:
        self.norm1.configure(embed_dim)
        self.attn.configure(embed_dim, num_heads)
        self.norm2.configure(embed_dim)
        self.mlp.configure(embed_dim, _hidden(mlp_ratio, embed_dim))

    def _forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def forward(self, x: Tensor) -> Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            # recomputed in backward with the layers' active settings then: activate the next SubNet after backward
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class TokenClassifierHead(nn.Module):
    """Pooling of the tokens with the final LayerNorm, dropout, classifier (timm ViT's ``norm`` / ``fc_norm`` + head).

    ``global_pool="token"``: LayerNorm, then the class token (timm's default, ``norm``); ``"avg"``: the mean
    of the patch tokens, then LayerNorm (timm's ``fc_norm``). Either way the one LayerNorm is ``norm``.
    """

    def __init__(self, embed_dim: int, num_classes: int, drop_rate: float = 0.0, global_pool: str = "token") -> None:
        super().__init__()
        self.num_features = embed_dim
        self.global_pool = _check_pool(global_pool)
        self.norm = ElasticLayerNorm(embed_dim)
        self.drop = nn.Dropout(drop_rate)
        self.classifier = ElasticLinear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.classifier = ElasticLinear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            trunc_normal_(self.classifier.weight, std=0.02)
            nn.init.zeros_(self.classifier.bias)

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        # per-token LayerNorm: normalising only the class token equals normalising all, then pooling
        x = self.norm(x[:, 0] if self.global_pool == "token" else x[:, 1:].mean(dim=1))
        if pre_logits:
            return x
        return self.classifier(self.drop(x))


class ElasticVisionTransformer(SuperNet):
    """Weight-shared ViT SuperNet with elastic embedding dim, heads, MLP ratio and depth (AutoFormer's space).

    Args:
        img_size: input side (fixed; an int or a square ``(H, W)``).
        patch_size: patch side (the patch-embedding conv's kernel and stride).
        in_chans: input channels.
        num_classes: classifier outputs (0: no classifier, ``forward`` returns the pooled features).
        embed_dims: allowed embedding dims (the largest is the weights' width).
        num_heads: allowed head counts per block.
        head_dim: dim of every head (default ``max(embed_dims) // max(num_heads)``, timm's ``dim // heads``).
        mlp_ratios: allowed MLP ratios per block (hidden width ``round(ratio × embed_dim)``).
        depths: allowed depths (blocks run from the first).
        qkv_bias: biases on the q/k/v projections (timm ViT: yes).
        drop_rate: dropout before the classifier.
        global_pool: ``"token"`` (the class token, timm ViT's default) or ``"avg"`` (mean of the patch tokens,
            LayerNorm after the pooling as timm's ``fc_norm``; trains faster from scratch on small data).

    Example::

        >>> import timm, ws_core
        >>> net = timm.create_model("ws_vit_nano_patch4_28", num_classes=10)
        >>> net.space.size() == 3 * (9**4 + 9**5 + 9**6)
        True
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (128, 160, 192),
        num_heads: Sequence[int] = (1, 2, 3),
        head_dim: int | None = None,
        mlp_ratios: Sequence[float] = (2, 3, 4),
        depths: Sequence[int] = (8, 10, 12),
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        global_pool: str = "token",
    ) -> None:
        super().__init__()
        if not isinstance(img_size, int):
            if len(img_size) != 2 or img_size[0] != img_size[1]:
                raise ValueError(f"img_size must be an int or a square (H, W), got {tuple(img_size)}")
            img_size = int(img_size[0])
        if img_size % patch_size:
            raise ValueError(f"img_size must be a multiple of patch_size ({patch_size}), got {img_size}")
        _check_pool(global_pool)
        embed_dims, num_heads = tuple(sorted(set(embed_dims))), tuple(sorted(set(num_heads)))
        mlp_ratios, depths = tuple(sorted(set(mlp_ratios))), tuple(sorted(set(depths)))
        dim, heads, max_depth = embed_dims[-1], num_heads[-1], depths[-1]
        head_dim = dim // heads if head_dim is None else int(head_dim)
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.img_size, self.patch_size, self.global_pool = img_size, patch_size, global_pool
        self.embed_dim = self.num_features = self.head_hidden_size = dim
        self.num_prefix_tokens = 1
        self.grad_checkpointing = False
        self.space = SearchSpace(
            [
                Dimension("resolution", (img_size,), "net"),
                Dimension("embed_dim", embed_dims, "net"),
                Dimension("depth", depths, "stage"),
                Dimension("num_heads", num_heads, "block"),
                Dimension("mlp_ratio", mlp_ratios, "block"),
            ],
            stage_blocks=(max_depth,),
        )
        grid = img_size // patch_size
        self.stem = ViTStem(ElasticConv2d(in_chans, dim, patch_size, patch_size, bias=True, padding=0),
                            ElasticPositionEmbedding(dim, grid * grid))
        blocks = [TransformerBlock(dim, heads, head_dim, mlp_ratios, num_heads, embed_dims, qkv_bias)
                  for _ in range(max_depth)]
        self.stages = nn.Sequential(ElasticStage(blocks))
        self.head = TokenClassifierHead(dim, num_classes, drop_rate, global_pool)
        self.feature_info = [dict(module=f"stages.0.blocks.{i}", num_chs=dim, reduction=patch_size)
                             for i in range(max_depth)]
        self._blocks = list(enumerate(blocks))
        self._init_weights()
        self.activate(self.space.max())

    def _init_weights(self) -> None:
        """timm's ViT initialisation ('timm' mode): truncated-normal linears (std 0.02) and position
        embedding, class token N(0, 1e-6), LayerNorms at 1 / 0; the patch conv keeps PyTorch's default."""
        trunc_normal_(self.stem.pos.pos_embed, std=0.02)
        nn.init.normal_(self.stem.pos.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _configure(self, cfg: SubNetConfig) -> None:
        d, depth, heads, ratios = cfg["embed_dim"], cfg["depth"][0], cfg["num_heads"], cfg["mlp_ratio"]
        self.stem.patch_embed.configure(self.in_chans, d)
        self.stem.pos.configure(d)
        self.stages[0].configure(depth)
        for i, block in self._blocks[:depth]:
            block.configure(d, heads[i], ratios[i])
        self.head.norm.configure(d)
        if isinstance(self.head.classifier, ElasticLinear):
            self.head.classifier.configure(d)

    # timm model API -------------------------------------------------------------------------------
    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = self.head.global_pool = _check_pool(global_pool)
        super().reset_classifier(num_classes)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"stem.pos.pos_embed", "stem.pos.cls_token"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stem", blocks=[(r"^stages\.0\.blocks\.(\d+)", None), (r"^head\.norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per transformer block (timm's ``set_grad_checkpointing``)."""
        self.grad_checkpointing = bool(enable)
        for _, block in self._blocks:
            block.grad_checkpointing = bool(enable)

    def _feature_indices(self, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
        n = len(self.feature_info)
        try:
            return feature_take_indices(n, indices)
        except AssertionError as e:
            raise ValueError(f"{type(self).__name__}: {e} ({n} features: one per block)") from None

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """timm's ``forward_intermediates`` (``VisionTransformer``'s) for the active SubNet.

        ``indices`` name blocks of the SuperNet, as ``feature_info`` does (``None`` all, an int the last n,
        a sequence those, negative from the end). Block ``i`` of a SubNet that runs ``d <= i`` blocks gives
        the output of its last active block (as a conv SuperNet's stage feature is its last active block's
        output): skipped blocks are never run, and the number of features does not depend on the depth.
        The maps have the active embedding dim; ``norm`` applies the final LayerNorm to each; the final
        tokens (``intermediates_only=False``) are after the final norm, as timm's.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be one of ['NCHW', 'NLC'], got {output_fmt!r}")
        take, _ = self._feature_indices(indices)
        stage = self.stages[0]
        depth = stage.active_depth
        if depth < 1:
            raise ValueError("forward_intermediates: the active SubNet runs no transformer block")
        take = [min(i, depth - 1) for i in take]
        b, _, h, w = x.shape  # fixed resolution: never resized
        x = self.stem(x)
        outputs: dict[int, Tensor] = {}
        stop = max(take) + 1 if (stop_early or intermediates_only) else depth
        for i in range(stop):
            x = stage.blocks[i](x)
            if i in take:
                outputs[i] = self.head.norm(x) if norm else x
        intermediates = [outputs[i] for i in take]
        prefix = [y[:, :self.num_prefix_tokens] for y in intermediates]
        intermediates = [y[:, self.num_prefix_tokens:] for y in intermediates]
        if output_fmt == "NCHW":
            gh, gw = h // self.patch_size, w // self.patch_size
            intermediates = [y.reshape(b, gh, gw, -1).permute(0, 3, 1, 2).contiguous() for y in intermediates]
        if return_prefix_tokens:
            intermediates = list(zip(intermediates, prefix))
        if intermediates_only:
            return intermediates
        return self.head.norm(x), intermediates

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """timm's feature-extraction pruning: ``prune_head`` drops the classifier; every block stays (elastic
        depth and ``activate`` need them all). Returns the absolute block indices."""
        take, _ = self._feature_indices(indices)
        if prune_head:
            self.reset_classifier(0)
        return take


# Loading dense timm ViTs ------------------------------------------------------------------------------

_TIMM_KEYS = [
    (r"^cls_token$", "stem.pos.cls_token"),
    (r"^pos_embed$", "stem.pos.pos_embed"),
    (r"^patch_embed\.proj\.(weight|bias)$", r"stem.patch_embed.\1"),
    (r"^blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)$", r"stages.0.blocks.\1.\2.\3"),
    (r"^blocks\.(\d+)\.attn\.proj\.(weight|bias)$", r"stages.0.blocks.\1.attn.proj.\2"),
    (r"^blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$", r"stages.0.blocks.\1.mlp.\2.\3"),
    (r"^norm\.(weight|bias)$", r"head.norm.\1"),  # global_pool="token": LayerNorm, then the class token
    (r"^fc_norm\.(weight|bias)$", r"head.norm.\1"),  # global_pool="avg": mean of the patch tokens, then LayerNorm
    (r"^head\.(weight|bias)$", r"head.classifier.\1"),
]
_FINAL_NORM = {"norm": "token", "fc_norm": "avg"}
_QKV = re.compile(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor], model: ElasticVisionTransformer) -> dict[str, Tensor]:
    """Map a dense timm ``VisionTransformer`` state dict (class token, no layer scale, no register tokens)
    onto :class:`ElasticVisionTransformer` keys: its max SubNet then computes the dense model's function
    (the final ``norm`` — or ``fc_norm`` with ``global_pool="avg"`` — becomes ``head.norm``).

    timm's fused ``qkv`` is split into ``q_proj``, ``k_proj``, ``v_proj`` (rows ``[0:D]``, ``[D:2D]``,
    ``[2D:3D]``); a position embedding for another grid is resampled (timm's ``resample_abs_pos_embed``).
    A state dict already in ws-core's layout is returned unchanged. Keys of timm features this SuperNet
    does not have (layer scale, register tokens, ``fc_norm``, ...) raise ``ValueError``.
    """
    if "stem.pos.pos_embed" in state_dict:
        return dict(state_dict)
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        pool = _FINAL_NORM.get(key.split(".")[0])
        if pool is not None and pool != model.global_pool:
            raise ValueError(f"checkpoint_filter_fn: {key!r} belongs to a timm ViT with global_pool={pool!r}; "
                             f"build the SuperNet with global_pool={pool!r} (it has {model.global_pool!r})")
        match = _QKV.match(key)
        if match is not None:
            block, kind = match.groups()
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"stages.0.blocks.{block}.attn.{name}.{kind}"] = part.clone()
            continue
        for pattern, repl in _TIMM_KEYS:
            if re.match(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"checkpoint_filter_fn: keys of a timm ViT that {type(model).__name__} has no place for "
                         f"(layer scale, register tokens, fc_norm, ... are not part of this SuperNet): "
                         f"{unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    pos = out.get("stem.pos.pos_embed")
    own = model.stem.pos.pos_embed
    if pos is not None and pos.shape[1] != own.shape[1]:
        grid = round((own.shape[1] - 1) ** 0.5)
        out["stem.pos.pos_embed"] = resample_abs_pos_embed(pos, new_size=(grid, grid), num_prefix_tokens=1)
    return out


# Registry -----------------------------------------------------------------------------------------------

def _create(variant: str, pretrained: bool = False, **kwargs) -> ElasticVisionTransformer:
    out_indices = kwargs.pop("out_indices", 3)
    return build_model_with_cfg(ElasticVisionTransformer, variant, pretrained,
                                pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **kwargs)


def _cfg(**kwargs) -> dict:
    """timm ``pretrained_cfg`` of a ViT SuperNet (as timm's ViT configs; no hosted weights: ``file=``)."""
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": None, "crop_pct": 0.9,
        "interpolation": "bicubic", "fixed_input_size": True, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
        "first_conv": "stem.patch_embed", "classifier": "head.classifier", "license": "apache-2.0", **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "ws_vit_tiny_patch16_224": _cfg(),
    "ws_vit_nano_patch4_28": _cfg(num_classes=10, input_size=(3, 28, 28), crop_pct=1.0, interpolation="bilinear",
                                  mean=FASHION_MNIST_MEAN * 3, std=FASHION_MNIST_STD * 3),
})


@register_model
def ws_vit_tiny_patch16_224(pretrained: bool = False, **kwargs) -> ElasticVisionTransformer:
    """ViT-Tiny/16 (DeiT-Ti) as a SuperNet, 224×224: embed {128, 160, 192}, heads {1, 2, 3} of 64 dims,
    MLP ratio {2, 3, 4} per block, depth {8, 10, 12}; 3 · (9⁸ + 9¹⁰ + 9¹²) ≈ 8.6 × 10¹¹ SubNets. The max
    SubNet is timm's ``vit_tiny_patch16_224`` (whose state dict loads into it)."""
    args = dict(patch_size=16, embed_dims=(128, 160, 192), num_heads=(1, 2, 3), head_dim=64, mlp_ratios=(2, 3, 4),
                depths=(8, 10, 12))
    return _create("ws_vit_tiny_patch16_224", pretrained, **dict(args, **kwargs))


@register_model
def ws_vit_nano_patch4_28(pretrained: bool = False, **kwargs) -> ElasticVisionTransformer:
    """A small ViT SuperNet for 28×28 inputs (Fashion-MNIST), patch 4 (49 patches + class token): embed
    {32, 48, 64}, heads {2, 3, 4} of 16 dims, MLP ratio {2, 3, 4}, depth {4, 5, 6};
    3 · (9⁴ + 9⁵ + 9⁶) ≈ 1.8 × 10⁶ SubNets. Mean pooling of the patch tokens (``global_pool="avg"``), which
    trains faster from scratch than the class token. Grey images come as 3 channels, as for
    ``ws_ofa_mbv3_035_28``."""
    args = dict(patch_size=4, embed_dims=(32, 48, 64), num_heads=(2, 3, 4), head_dim=16, mlp_ratios=(2, 3, 4),
                depths=(4, 5, 6), global_pool="avg")
    return _create("ws_vit_nano_patch4_28", pretrained, **dict(args, **kwargs))

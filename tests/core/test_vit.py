"""The elastic ViT SuperNets (``ws_vit_*``) and the transformer layers of ``ws_core.elastic``.

The generic SuperNet contract runs over these models in ``test_contract.py``; here: the elastic
layers by hand, importance sorting, exact search-space sizes, a dense timm ViT loading as the max
SubNet, the attention term of the cost model, timm's feature / checkpointing API, and search.
"""

from __future__ import annotations

import itertools
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import ws_core  # noqa: F401  (registers the ws_* SuperNets)
from ws_core.cost import CostModel, count_macs, count_params
from ws_core.elastic import (
    ElasticAttention,
    ElasticConv2d,
    ElasticLayerNorm,
    ElasticMlp,
    ElasticPositionEmbedding,
    PositionEmbedding,
)
from ws_core.models.vit import ElasticVisionTransformer, checkpoint_filter_fn
from ws_core.search import evolutionary_search, pareto_search


def _perturb_(module: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> None:
    """Move every parameter off its initial value (LayerNorms off 1/0, biases off 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


@pytest.fixture
def nano() -> ElasticVisionTransformer:
    torch.manual_seed(0)
    net = timm.create_model("ws_vit_nano_patch4_28", num_classes=10).eval()
    _perturb_(net)
    return net


def _tiny_vit(**kwargs) -> ElasticVisionTransformer:
    """8×8 inputs, patch 4: 4 patches + class token = 5 tokens."""
    args = dict(img_size=8, patch_size=4, in_chans=3, num_classes=10, embed_dims=(8,), num_heads=(1, 2), head_dim=4,
                mlp_ratios=(1, 2), depths=(0, 1))
    return ElasticVisionTransformer(**dict(args, **kwargs)).eval()


# Elastic layers by hand ---------------------------------------------------------------------------
def test_elastic_attention_reads_the_leading_heads():
    torch.manual_seed(0)
    attn = ElasticAttention(dim=12, num_heads=3, head_dim=4, head_choices=(1, 2, 3))
    _perturb_(attn)
    attn.configure(8, 2)  # embed dim 8 of 12, heads 2 of 3
    assert attn.active_heads == 2
    x = torch.randn(2, 5, 8)
    # reference: per head h, softmax(q_h k_hᵀ / 2) v_h with q = x W_q[:8, :8]ᵀ + b_q[:8], then proj[:8, :8]
    q = F.linear(x, attn.q_proj.weight[:8, :8], attn.q_proj.bias[:8]).view(2, 5, 2, 4).transpose(1, 2)
    k = F.linear(x, attn.k_proj.weight[:8, :8], attn.k_proj.bias[:8]).view(2, 5, 2, 4).transpose(1, 2)
    v = F.linear(x, attn.v_proj.weight[:8, :8], attn.v_proj.bias[:8]).view(2, 5, 2, 4).transpose(1, 2)
    a = torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1)
    ref = F.linear((a @ v).transpose(1, 2).reshape(2, 5, 8), attn.proj.weight[:8, :8], attn.proj.bias[:8])
    torch.testing.assert_close(attn(x), ref)
    assert attn.q_proj.active_slices()["weight"] == (slice(0, 8), slice(0, 8))
    assert attn.proj.active_slices()["weight"] == (slice(0, 8), slice(0, 8))
    assert attn.attention_macs(5) == 2 * 25 * 8
    with pytest.raises(ValueError, match=r"head choices must be in \[1, 3\], got \[2, 4\]"):
        ElasticAttention(12, 3, 4, head_choices=(2, 4))


def test_elastic_layer_norm_mlp_and_position_embedding_slice_leading_channels():
    torch.manual_seed(0)
    norm = ElasticLayerNorm(6)
    mlp = ElasticMlp(6, 24, hidden_choices=(8, 16, 24))
    pos = ElasticPositionEmbedding(6, num_patches=4)
    for m in (norm, mlp, pos):
        _perturb_(m, scale=0.5)
    norm.configure(4)
    mlp.configure(4, 8)
    pos.configure(4)
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(norm(x), F.layer_norm(x, (4,), norm.weight[:4], norm.bias[:4], eps=1e-6))
    hidden = F.gelu(F.linear(x, mlp.fc1.weight[:8, :4], mlp.fc1.bias[:8]))
    torch.testing.assert_close(mlp(x), F.linear(hidden, mlp.fc2.weight[:4, :8], mlp.fc2.bias[:4]))
    grid = torch.randn(2, 4, 2, 2)  # [B, D, H, W] from the patch embedding
    tokens = torch.cat([pos.cls_token[..., :4].expand(2, 1, 4), grid.flatten(2).transpose(1, 2)], dim=1)
    torch.testing.assert_close(pos(grid), tokens + pos.pos_embed[..., :4])
    assert pos.active_slices() == {"cls_token": (slice(0, 1), slice(0, 1), slice(0, 4)),
                                   "pos_embed": (slice(0, 1), slice(0, 5), slice(0, 4))}
    static = pos.to_static()
    assert type(static) is PositionEmbedding and static.pos_embed.shape == (1, 5, 4)
    torch.testing.assert_close(static(grid), pos(grid))
    assert type(norm.to_static()) is torch.nn.LayerNorm
    torch.testing.assert_close(norm.to_static()(x), norm(x))
    with pytest.raises(ValueError, match="expected 4 patches, got 9"):
        pos(torch.randn(1, 4, 3, 3))
    patch = ElasticConv2d(3, 6, kernel_size=4, stride=4, bias=True, padding=0)
    assert patch.padding == (0, 0) and patch(torch.randn(1, 3, 8, 8)).shape == (1, 6, 2, 2)


# Importance sorting ---------------------------------------------------------------------------------
def _head_importance(attn: ElasticAttention) -> torch.Tensor:
    return attn.proj.weight.abs().sum(0).view(attn.num_heads, attn.head_dim).sum(1)


def test_sorting_heads_and_neurons_keeps_the_max_net_and_ranks_them(nano):
    x = torch.randn(4, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    small = nano.space.min()
    with torch.no_grad():
        before_max = nano(x)
        before_small = nano.extract(small).eval()(x)
    assert nano.sort_channels() == 2 * 6  # one attention and one MLP per block
    with torch.no_grad():
        torch.testing.assert_close(nano(x), before_max, atol=1e-5, rtol=0)  # function of the max net unchanged
        assert not torch.allclose(nano.extract(small).eval()(x), before_small, atol=1e-3)  # leading slices moved
    for block in nano.stages[0].blocks:
        heads = _head_importance(block.attn)
        neurons = block.mlp.fc2.weight.abs().sum(0)
        assert torch.all(heads[:-1] >= heads[1:]) and torch.all(neurons[:-1] >= neurons[1:])


def test_nested_sorting_keeps_heads_within_their_groups(nano):
    attn = nano.stages[0].blocks[0].attn
    assert attn.nested_widths() == [2, 3, 4]
    rows = attn.q_proj.weight.detach().clone().view(4, 16, -1)
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        before = nano(x)
    nano.sort_channels(nested=True)
    after = attn.q_proj.weight.detach().view(4, 16, -1)
    # heads [0, 2) are a permutation of the original heads 0 and 1; heads 2 and 3 stay where they were
    first = {tuple(after[h].flatten().tolist()) for h in (0, 1)}
    assert first == {tuple(rows[h].flatten().tolist()) for h in (0, 1)}
    assert torch.equal(after[2], rows[2]) and torch.equal(after[3], rows[3])
    heads = _head_importance(attn)
    assert heads[0] >= heads[1]
    with torch.no_grad():
        torch.testing.assert_close(nano(x), before, atol=1e-5, rtol=0)


# Search spaces ----------------------------------------------------------------------------------------
def test_search_space_sizes_are_exact():
    nano = timm.create_model("ws_vit_nano_patch4_28")
    tiny = timm.create_model("ws_vit_tiny_patch16_224")
    assert nano.space.size() == 3 * (9**4 + 9**5 + 9**6)
    assert tiny.space.size() == 3 * (9**8 + 9**10 + 9**12)
    # brute force on a small space: every (embed, depth, heads, ratio) assignment, canonicalised
    net = _tiny_vit(embed_dims=(4, 8), depths=(1, 2))
    space = net.space
    seen = set()
    for e, d, heads, ratios in itertools.product((4, 8), (1, 2), itertools.product((1, 2), repeat=2),
                                                 itertools.product((1, 2), repeat=2)):
        seen.add(space.validate({"resolution": 8, "embed_dim": e, "depth": [d], "num_heads": list(heads),
                                 "mlp_ratio": list(ratios)}))
    assert space.size() == len(seen) == 2 * (4 + 16)


def test_registered_configs_follow_timm():
    nano = timm.get_pretrained_cfg("ws_vit_nano_patch4_28").to_dict()
    tiny = timm.get_pretrained_cfg("ws_vit_tiny_patch16_224").to_dict()
    assert nano["input_size"] == (3, 28, 28) and nano["num_classes"] == 10
    assert nano["mean"] == (0.2860,) * 3 and nano["std"] == (0.3530,) * 3  # grey repeated, as ws_ofa_mbv3_035_28
    assert tiny["input_size"] == (3, 224, 224) and tiny["fixed_input_size"]
    assert tiny["first_conv"] == "stem.patch_embed" and tiny["classifier"] == "head.classifier"
    net = timm.create_model("ws_vit_nano_patch4_28", num_classes=0, in_chans=1, drop_rate=0.2)
    assert net.get_classifier().__class__ is torch.nn.Identity and net.head.drop.p == 0.2
    features = net.forward_features(torch.randn(2, 1, 28, 28))
    assert features.shape == (2, 50, 64)
    assert net.forward_head(features).shape == (2, 64)
    with pytest.raises(ValueError, match=r"global_pool must be one of \['token', 'avg'\], got 'max'"):
        timm.create_model("ws_vit_nano_patch4_28", global_pool="max")


# A dense timm ViT as the max SubNet -------------------------------------------------------------------
def test_timm_vit_tiny_state_dict_loads_as_the_max_subnet(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    dense = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    _perturb_(dense)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = dense(x)
    net = timm.create_model("ws_vit_tiny_patch16_224").eval()
    net.load_state_dict(checkpoint_filter_fn(dense.state_dict(), net))
    assert net.active == net.space.max()
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=0)
    # through timm's own loader: a dense checkpoint file, pretrained_filter_fn does the mapping
    path = tmp_path / "vit_tiny_patch16_224.safetensors"
    save_file({k: v.contiguous() for k, v in dense.state_dict().items()}, str(path))
    loaded = timm.create_model("ws_vit_tiny_patch16_224", pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(path))).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"no place for.*blocks\.0\.ls1\.gamma"):
        checkpoint_filter_fn(dict(dense.state_dict(), **{"blocks.0.ls1.gamma": torch.ones(192)}), net)


def test_timm_vit_with_mean_pooling_loads_into_the_nano_space():
    """``ws_vit_nano_patch4_28`` pools the patch tokens (timm ``global_pool="avg"``: ``fc_norm`` after the mean)."""
    torch.manual_seed(0)
    dense = timm.create_model("vit_tiny_patch16_224", img_size=28, patch_size=4, embed_dim=64, depth=6, num_heads=4,
                              num_classes=10, global_pool="avg").eval()
    _perturb_(dense)
    net = timm.create_model("ws_vit_nano_patch4_28").eval()
    assert net.global_pool == "avg" and "fc_norm.weight" in dense.state_dict()
    net.load_state_dict(checkpoint_filter_fn(dense.state_dict(), net))
    x = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(net(x), dense(x), atol=1e-5, rtol=0)
    token = timm.create_model("ws_vit_nano_patch4_28", global_pool="token")
    with pytest.raises(ValueError, match=r"'fc_norm.weight' belongs to a timm ViT with global_pool='avg'"):
        checkpoint_filter_fn(dense.state_dict(), token)


# Cost model -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("heads", "ratio", "depth", "macs", "params"),
    [
        # 5 tokens. patch conv 8·3·4·4 · 4 positions = 1536 MACs, 392 params; cls + pos 8 + 5·8 = 48 params;
        # classifier 80 MACs, 90 params; head LayerNorm 16 params.
        # 2 heads (inner 8), ratio 2 (hidden 16): q,k,v 3·5·8·8 = 960, qkᵀ + av 2·5²·8 = 400, proj 5·8·8 = 320,
        # fc1 5·8·16 = 640, fc2 640; params 2·16 (norms) + 3·72 + 72 + 144 + 136 = 600
        (2, 2, 1, 1536 + 960 + 400 + 320 + 640 + 640 + 80, 392 + 48 + 600 + 16 + 90),
        # 1 head (inner 4), ratio 1 (hidden 8): 480 + 2·25·4 = 200 + 160 + 320 + 320; params 32 + 3·36 + 40 + 72 + 72
        (1, 1, 1, 1536 + 480 + 200 + 160 + 320 + 320 + 80, 392 + 48 + 324 + 16 + 90),
        # depth 0: the block is skipped
        (1, 1, 0, 1536 + 80, 392 + 48 + 16 + 90),
    ],
)
def test_macs_include_the_attention_term_by_hand(heads, ratio, depth, macs, params):
    net = _tiny_vit()
    cfg = {"resolution": 8, "embed_dim": 8, "depth": [depth], "num_heads": [heads], "mlp_ratio": [ratio]}
    assert count_macs(net, cfg) == macs
    assert count_params(net, cfg) == params
    assert sum(p.numel() for p in net.extract(cfg).parameters()) == params
    if depth:
        assert CostModel(net).layer_macs(cfg)["stages.0.blocks.0.attn"] == 2 * 5 * 5 * 4 * heads


def test_macs_match_the_flop_counter_with_explicit_attention(nano):
    costs = CostModel(nano)
    g = torch.Generator().manual_seed(3)
    for cfg in [nano.space.min(), nano.space.max(), nano.space.sample(g)]:
        sub = nano.extract(cfg).eval()
        # the math backend runs q kᵀ and A v as batched matmuls, which FlopCounterMode counts
        with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            sub(torch.randn(1, 3, 28, 28))
        assert costs.macs(cfg) * 2 == counter.get_total_flops()
    assert costs.macs(nano.space.max()) > 5 * costs.macs(nano.space.min())


# timm's feature and checkpointing API ----------------------------------------------------------------
def test_feature_info_and_features_only_follow_the_active_subnet():
    net = timm.create_model("ws_vit_nano_patch4_28")
    assert [f["module"] for f in net.feature_info] == [f"stages.0.blocks.{i}" for i in range(6)]
    assert {(f["num_chs"], f["reduction"]) for f in net.feature_info} == {(64, 4)}
    feats = timm.create_model("ws_vit_nano_patch4_28", features_only=True, out_indices=(1, -1)).eval()
    assert feats.feature_info.channels() == [64, 64] and feats.feature_info.reduction() == [4, 4]
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert [tuple(f.shape) for f in feats(x)] == [(2, 64, 7, 7)] * 2
        supernet = feats.model
        cfg = supernet.space.min()  # embed 32, depth 4
        supernet.activate(cfg)
        maps = feats(x)
        assert [tuple(f.shape) for f in maps] == [(2, 32, 7, 7)] * 2
        # block 5 of a 4-block SubNet: the output of its last active block (3), as a stage's last active block
        final, inter = supernet.forward_intermediates(x, indices=[3, 5], output_fmt="NLC")
        assert final.shape == (2, 50, 32) and inter[0].shape == (2, 49, 32)
        torch.testing.assert_close(inter[1], inter[0])
        torch.testing.assert_close(maps[1], inter[0].transpose(1, 2).reshape(2, 32, 7, 7))
        torch.testing.assert_close(final, supernet.head.norm(supernet.forward_features(x)))
        assert not torch.allclose(maps[0], maps[1])
    with pytest.raises(ValueError, match=r"out of range.*6 features: one per block"):
        supernet.forward_intermediates(x, indices=[6])


def test_grad_checkpointing_gives_the_same_gradients(nano):
    cfg = nano.space.sample(torch.Generator().manual_seed(4))
    nano.activate(cfg)
    x = torch.randn(3, 3, 28, 28)

    def grads():
        nano.zero_grad()
        nano(x).square().sum().backward()
        return {n: p.grad.clone() for n, p in nano.named_parameters() if p.grad is not None}

    plain = grads()
    nano.set_grad_checkpointing(True)
    assert all(b.grad_checkpointing for b in nano.stages[0].blocks)
    checkpointed = grads()
    nano.set_grad_checkpointing(False)
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    for name, g in plain.items():
        torch.testing.assert_close(checkpointed[name], g, atol=1e-6, rtol=1e-5)


# Search ------------------------------------------------------------------------------------------------
def test_search_runs_on_the_vit_space(nano):
    costs = CostModel(nano)
    space = nano.space
    budget = (costs.macs(space.min()) + costs.macs(space.max())) / 2
    g = torch.Generator().manual_seed(0)
    result = evolutionary_search(space, fitness=costs.params, cost=costs.macs, constraint=budget,
                                 population_size=8, generations=3, generator=g)
    assert result.best_cost <= budget and space.is_valid(result.best)
    assert result.history == sorted(result.history)
    front = pareto_search(space, score=costs.params, cost=costs.macs, candidates=6,
                          generator=torch.Generator().manual_seed(1))
    assert len(front) == 8 and any(p.pareto for p in front)
    assert len(space.encode(space.max())) == space.encoding_length
    assert math.isfinite(result.best_fitness)


def test_ws_checkpoint_round_trip(nano, tmp_path):
    from ws_core.checkpoint import create_from_checkpoint, save_checkpoint

    cfg = nano.space.sample(torch.Generator().manual_seed(5))
    nano.activate(cfg)
    path = save_checkpoint(nano, tmp_path / "vit.safetensors")
    other = create_from_checkpoint(path).eval()
    assert type(other) is ElasticVisionTransformer and other.active == cfg and other.global_pool == "avg"
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(other(x), nano(x), atol=0, rtol=0)

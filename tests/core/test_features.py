"""timm's feature extraction (``features_only=True``) and ``set_grad_checkpointing`` on every ``ws_*`` SuperNet.

Every test runs the smallest resolution of the SuperNet's space, so the 224-pixel ImageNet SuperNets stay
cheap; a new registered SuperNet is covered without editing this file.
"""

from __future__ import annotations

import copy
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import ws_core  # noqa: F401  (registers the ws_* SuperNets)
from ws_core import SubNetConfig, SuperNet
from ws_core.elastic import ElasticStage

MODELS = timm.list_models("ws_*")


def _smallest(net: SuperNet, cfg: SubNetConfig) -> SubNetConfig:
    return cfg.replace(resolution=net.space["resolution"].choices[0])


def _image(side: int, batch: int = 1) -> Tensor:
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(1))


def _as_map(y: Tensor, like: Tensor) -> Tensor:
    """A block output as a feature map shaped like ``like``: tokens (B, prefix + H·W, C) → (B, C, H, W)."""
    if y.dim() == 3:
        b, c, h, w = like.shape
        return y[:, -h * w:].transpose(1, 2).reshape(b, c, h, w)
    return y


@pytest.mark.parametrize("name", MODELS)
def test_features_only_match_feature_info_for_max_and_min_subnets(name):
    """Count, channels and strides of the features of the max and the min SubNet, against ``feature_info``.

    Shapes only, so the SuperNet is built on the meta device: even the 224-pixel ones cost nothing to run."""
    with torch.device("meta"):
        feats = timm.create_model(name, features_only=True).eval()
    net, info = feats.model, feats.feature_info
    assert isinstance(net, SuperNet)
    assert len(net.feature_info) >= len(info.out_indices) > 0
    data_side = timm.get_pretrained_cfg(name).input_size[-1]
    for which, cfg in (("max", net.space.max()), ("min", net.space.min())):
        cfg = _smallest(net, cfg)
        net.activate(cfg)
        out = feats(_image(data_side).to("meta"))  # resized to the SubNet's resolution, as in forward
        assert len(out) == len(info.out_indices)
        side = cfg["resolution"]
        for y, chs, reduction in zip(out, info.channels(), info.reduction()):
            assert y.shape[-2:] == (math.ceil(side / reduction),) * 2
            if which == "max":
                assert y.shape[1] == chs  # feature_info states the max SubNet's channels
            else:
                assert 0 < y.shape[1] <= chs


def _source(net: SuperNet, module_name: str) -> nn.Module:
    """The module whose output the feature named ``module_name`` must be: a stage, or a block the active SubNet
    skips, gives its stage's last active block."""
    module = net.get_submodule(module_name)
    if isinstance(module, ElasticStage):
        return module.blocks[module.active_depth - 1]
    parts = module_name.split(".")
    for k in range(len(parts) - 1, 0, -1):
        stage = net.get_submodule(".".join(parts[:k]))
        if isinstance(stage, ElasticStage):
            active = list(stage.blocks[:stage.active_depth])
            return module if any(module is b for b in active) else active[-1]
    return module


@pytest.mark.parametrize("name", MODELS)
def test_features_come_from_active_blocks_only(name):
    """Elastic depth: skipped blocks never run, a stage's feature is its last active block's output, and the
    last feature is what ``forward_features`` computes, with the active SubNet's channels."""
    torch.manual_seed(0)
    feats = timm.create_model(name, features_only=True).eval()
    net, info = feats.model, feats.feature_info
    cfg = _smallest(net, net.space.min())
    net.activate(cfg)
    x = _image(cfg["resolution"])
    stages = [m for m in net.modules() if isinstance(m, ElasticStage)]
    skipped = {block for stage in stages for block in stage.blocks[stage.active_depth:]}
    assert skipped, "the min SubNet skips blocks"
    ran: dict[nn.Module, Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, args, y: ran.__setitem__(m, y))
             for m in [net.stem, *(b for stage in stages for b in stage.blocks)]]
    try:
        with torch.no_grad():
            out = feats(x)
    finally:
        for h in hooks:
            h.remove()
    assert not skipped & set(ran)
    for y, module_name in zip(out, info.module_name()):
        torch.testing.assert_close(y, _as_map(ran[_source(net, module_name)], y), rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(out[-1], _as_map(net.forward_features(x), out[-1]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="out of range"):
        net.forward_intermediates(x, indices=[99], intermediates_only=True)


def _train_step(net: SuperNet, x: Tensor) -> tuple[Tensor, dict[str, Tensor], int]:
    """Loss, gradients and the number of forward calls of modules inside active blocks, for one step."""
    inner = [m for stage in net.stages for block in stage.blocks[:stage.active_depth]
             for m in block.modules() if m is not block]
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in inner]
    loss = F.cross_entropy(net(x), torch.tensor([1, 3]))
    loss.backward()
    for h in hooks:
        h.remove()
    return loss.detach(), {n: p.grad for n, p in net.named_parameters() if p.grad is not None}, len(calls)


@pytest.mark.parametrize("name", MODELS)
def test_grad_checkpointing_gives_the_plain_gradients(name):
    """``set_grad_checkpointing`` recomputes the active blocks in backward; the gradients do not change."""
    torch.manual_seed(0)
    net = timm.create_model(name, num_classes=5, drop_rate=0.0).train()
    cfg = net.activate(_smallest(net, net.space.min()))
    plain = copy.deepcopy(net)
    net.set_grad_checkpointing(True)
    x = _image(cfg["resolution"], batch=2)
    loss, grads, calls = _train_step(plain, x)
    loss_ckpt, grads_ckpt, calls_ckpt = _train_step(net, x)
    # recomputed in backward (up to the last saved activation: PyTorch stops recomputing early)
    assert calls < calls_ckpt <= 2 * calls
    torch.testing.assert_close(loss_ckpt, loss)
    assert grads_ckpt.keys() == grads.keys()
    for n, g in grads.items():
        torch.testing.assert_close(grads_ckpt[n], g, msg=n)

"""ws-train trains the elastic ViT (``ws_vit_nano_patch4_28``) with DεS and the sandwich rule: a few CPU steps."""

from __future__ import annotations

import math

import torch

from ws_train import DelayedEpsilonShrinking, SandwichRule, SubNetValidation, SuperNetModule

# a two-block space keeps the steps fast; embed {32, 48, 64}, heads {2, 3, 4}, MLP ratio {2, 3, 4} as registered
VIT = dict(depths=(1, 2))


def _module() -> SuperNetModule:
    return SuperNetModule("ws_vit_nano_patch4_28", num_classes=10, model_kwargs=VIT, optimizer="adamw", lr=1e-3,
                          val_bn_batches=0)


def _data(kit):
    return kit.data(image_size=28)  # 64 digits at 28×28, batches of 8: 8 steps per epoch


def test_delayed_epsilon_shrinking_trains_the_vit(kit):
    module, rec = _module(), kit.Recorder()
    before = {k: v.clone() for k, v in module.supernet.state_dict().items()}
    policy = DelayedEpsilonShrinking(warmup_fraction=0.75, ramp_fraction=0.25, ramp="linear")  # T_w = 6, ramp [4, 6)
    val = SubNetValidation(("min", "max"), bn_batches=1)
    kit.trainer(callbacks=[policy, val, rec], limit_val_batches=2).fit(module, _data(kit))
    space = module.supernet.space
    sandwich = ["max", "min", "random", "random"]
    roles = rec.roles()
    assert roles[0] == ["max"] and roles[-1] == sandwich and set(map(tuple, roles)) == {("max",), tuple(sandwich)}
    assert len(policy.sort_steps) == 1  # heads and MLP neurons importance-sorted once, when the SubNets join
    assert all(plan[1][1] == space.min() for plan in rec.plans if len(plan) == 4)
    assert {cfg["embed_dim"] for plan in rec.plans for _, cfg, _, _ in plan} >= {32, 64}
    assert all(math.isfinite(v) for losses in rec.losses for v in losses)
    after = module.supernet.state_dict()
    # the min SubNet's slice of the first block's q projection trained (the min net joined at step 4)
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert "stages.0.blocks.0.attn.q_proj.weight" in moved and "head.classifier.weight" in moved
    assert set(val.results) == {space.min().id, space.max().id}
    assert all(0.0 <= acc <= 1.0 for acc in val.results.values())


def test_sandwich_rule_trains_the_vit(kit):
    module, rec = _module(), kit.Recorder()
    kit.trainer(callbacks=[SandwichRule(num_random=1, seed=3), rec], max_steps=3).fit(module, _data(kit))
    space = module.supernet.space
    assert rec.roles() == [["max", "min", "random"]] * 3
    assert all(plan[0][1] == space.max() and plan[1][1] == space.min() for plan in rec.plans)
    assert [loss for *_, loss in rec.plans[0]] == ["ce", "inplace_kd", "inplace_kd"]
    assert all(math.isfinite(v) for losses in rec.losses for v in losses)

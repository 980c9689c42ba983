"""Step-seeded SubNet sampling, the sandwich set, restricted spaces and the distillation loss."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

import ws_core  # noqa: F401
from ws_train.losses import distillation_loss, soft_targets
from ws_train.sampling import SubNetTask, restrict_space, sandwich_tasks, subnet_generator, subnet_seed


@pytest.fixture(scope="module")
def space():
    return timm.create_model("ws_ofa_mbv3_035_32", num_classes=10).space

def test_subnet_seed_is_a_pure_function_of_seed_step_index():
    assert subnet_seed(0, 5, 2) == subnet_seed(0, 5, 2)
    seeds = {subnet_seed(s, t, i) for s in range(2) for t in range(50) for i in range(4)}
    assert len(seeds) == 400  # no collisions among 400 (seed, step, index) triples
    assert all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(ValueError, match="must be >= 0"):
        subnet_seed(0, -1, 0)

def test_same_step_and_index_give_the_same_subnet_in_any_process(space):
    a = space.sample(subnet_generator(7, 123, 2))
    b = space.sample(subnet_generator(7, 123, 2))
    assert a == b
    others = {space.sample(subnet_generator(7, 123 + k, 2)).id for k in range(1, 9)}
    assert a.id not in others and len(others) == 8

def test_sandwich_tasks(space):
    tasks = sandwich_tasks(space, step=3, seed=0, num_random=2, weight=0.5)
    assert [t.role for t in tasks] == ["max", "min", "random", "random"]
    assert [t.loss for t in tasks] == ["ce", "inplace_kd", "inplace_kd", "inplace_kd"]
    assert [t.weight for t in tasks] == [1.0, 0.5, 0.5, 0.5]
    assert tasks[0].config == space.max() and tasks[1].config == space.min()
    assert tasks[2].config == space.sample(subnet_generator(0, 3, 2))
    assert tasks[3].config == space.sample(subnet_generator(0, 3, 3))
    # β = 0 (DεS warm-up): only the max net
    assert [t.role for t in sandwich_tasks(space, 3, 0, 2, weight=0.0)] == ["max"]

def test_subnet_task_validation(space):
    with pytest.raises(ValueError, match=r"loss must be one of \['ce', 'inplace_kd', 'teacher_kd'\], got 'kl'"):
        SubNetTask(space.max(), 1.0, "kl")
    with pytest.raises(ValueError, match="weight must be >= 0"):
        SubNetTask(space.max(), -1.0)

def test_restrict_space_samples_only_allowed_choices(space):
    small = restrict_space(space, {"depth": (3, 4), "expand": (6,), "kernel": (7,)})
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        cfg = small.sample(g)
        assert set(cfg["depth"]) <= {3, 4}
        assert {e for e in cfg["expand"] if e is not None} == {6}
        assert space.validate(cfg) == cfg  # a valid config of the full space
    with pytest.raises(ValueError, match=r"dimension 'depth' allows \[2, 3, 4\], got \[5\]"):
        restrict_space(space, {"depth": (5,)})
    with pytest.raises(ValueError, match="unknown dimension"):
        restrict_space(space, {"width": (1,)})

def test_distillation_loss_hand_values():
    z = torch.tensor([[2.0, 0.0]])
    p = torch.softmax(z, -1)
    entropy = -(p * p.log()).sum()
    assert float(distillation_loss(z, soft_targets(z))) == pytest.approx(float(entropy))  # 0.3653
    # T = 2: T² · CE(softmax(z_t/2), log_softmax(z_s/2))
    zt, zs = torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]])
    pt = torch.softmax(zt / 2, -1)
    expected = 4 * -(pt * torch.log_softmax(zs / 2, -1)).sum()
    assert float(distillation_loss(zs, soft_targets(zt, 2.0), 2.0)) == pytest.approx(float(expected))
    # KL(p||q) = CE − H(p): the gradient w.r.t. the student is the same as KL's
    zs.requires_grad_(True)
    distillation_loss(zs, soft_targets(zt)).backward()
    zk = zs.detach().clone().requires_grad_(True)
    F.kl_div(torch.log_softmax(zk, -1), torch.softmax(zt, -1), reduction="batchmean").backward()
    assert torch.allclose(zs.grad, zk.grad, atol=1e-6)

def test_soft_targets_are_detached_and_reject_bad_temperature():
    z = torch.randn(3, 5, requires_grad=True)
    assert not soft_targets(z).requires_grad
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        soft_targets(z, 0)

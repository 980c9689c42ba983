"""Each shrinking policy trains a tiny SuperNet a few CPU steps; which SubNets trained when is recorded and checked."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from ws_train import DelayedEpsilonShrinking, ProgressiveShrinking, SandwichRule, SubNetTask
from ws_train.sampling import subnet_generator


class OptimizerStateProbe(Callback):
    """After the policy's hook: is the optimizer state empty at the start of each step?"""

    def __init__(self):
        self.empty = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.empty[trainer.global_step] = len(trainer.optimizers[0].state) == 0


def test_delayed_epsilon_shrinking_trains_max_alone_then_sandwich_with_ramp(kit):
    module, rec, probe = kit.module(), kit.Recorder(), OptimizerStateProbe()
    policy = DelayedEpsilonShrinking(warmup_fraction=0.5, ramp_fraction=0.25, ramp="linear")
    kit.trainer(callbacks=[policy, rec, probe]).fit(module, kit.data())
    space = module.supernet.space
    assert rec.steps == list(range(8))
    # 8 steps: switch at round(0.5 × 8) = 4, ramp of round(0.25 × 8) = 2 steps
    assert rec.roles() == [["max"]] * 4 + [["max", "min", "random", "random"]] * 4
    assert [plan[1][2] for plan in rec.plans[4:]] == [0.5, 1.0, 1.0, 1.0]  # β of the min net
    for step, plan in zip(rec.steps[4:], rec.plans[4:]):
        assert plan[0][1] == space.max() and plan[1][1] == space.min()
        assert [c for _, c, _, _ in plan[2:]] == [space.sample(subnet_generator(0, step, i)) for i in (2, 3)]
        assert [loss for *_, loss in plan] == ["ce", "inplace_kd", "inplace_kd", "inplace_kd"]
    # one-time channel sort at the switch, with the optimizer state cleared (momentum would point at old channels)
    assert policy.sort_steps == [4] and policy.sorted
    assert probe.empty[4] is True and probe.empty[3] is False and probe.empty[5] is False
    assert policy.subnet_passes == 4 * 1 + 4 * 4
    assert all(len(losses) == len(plan) for losses, plan in zip(rec.losses, rec.plans))


def test_delayed_epsilon_shrinking_lr_matched_ramp_hand_value(kit):
    module, rec = kit.module(lr=0.05), kit.Recorder()
    policy = DelayedEpsilonShrinking(warmup_fraction=0.5, ramp_fraction=0.25, sort_channels=False)
    kit.trainer(callbacks=[policy, rec], max_steps=6).fit(module, kit.data())
    # total 6 steps (max_steps), switch round(3) = 3, ramp round(1.5) = 2: β(3) = 0.5 · η(4) / η(3)
    lr3 = 0.05 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 3 / 6)).item())
    lr4 = 0.05 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 4 / 6)).item())
    assert rec.roles()[:3] == [["max"]] * 3
    assert rec.plans[3][1][2] == pytest.approx(0.5 * lr4 / lr3)  # = 0.5 · 0.0125 / 0.025 = 0.25
    assert rec.plans[3][1][2] == pytest.approx(0.25)
    assert rec.plans[4][1][2] == 1.0
    assert policy.sort_steps == []


def test_sandwich_rule_from_step_zero(kit):
    module, rec = kit.module(), kit.Recorder()
    kit.trainer(callbacks=[SandwichRule(num_random=1, seed=3), rec], max_steps=3).fit(module, kit.data())
    space = module.supernet.space
    assert rec.roles() == [["max", "min", "random"]] * 3
    for step, plan in zip(rec.steps, rec.plans):
        assert plan[2][1] == space.sample(subnet_generator(3, step, 2))
        assert all(w == 1.0 for _, _, w, _ in plan)


class TeacherProbe(Callback):
    """When the teacher appears: does it compute the full net's function? Snapshot both."""

    def __init__(self):
        self.step = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        teacher = pl_module.policy.teacher
        if teacher is None or self.step is not None:
            return
        self.step = trainer.global_step
        net = pl_module.supernet
        net.eval()
        with torch.no_grad(), net.subnet(net.space.max()):
            self.outputs_equal = torch.allclose(teacher(batch[0]), net(batch[0]), atol=1e-5)
        net.train()
        self.net_then = {k: v.clone() for k, v in net.state_dict().items()}
        self.teacher_then = {k: v.clone() for k, v in teacher.state_dict().items()}


def test_progressive_shrinking_phases_teacher_and_sorting(kit):
    module, rec, probe = kit.module(), kit.Recorder(), TeacherProbe()
    policy = ProgressiveShrinking(phase_weights=(1, 1, 1, 1, 1, 1))
    kit.trainer(callbacks=[policy, probe, rec], max_steps=6).fit(module, kit.data())
    space = module.supernet.space
    assert [p.name for p, *_ in policy.phases] == ["full", "kernel", "depth_a", "depth", "expand_a", "expand"]
    assert [len(plan) for plan in rec.plans] == [1, 1, 2, 2, 4, 4]
    (full,), (kernel,) = rec.plans[0], rec.plans[1]
    assert full[1] == space.max() and full[3] == "ce"
    assert kernel[3] == "teacher_kd"
    assert kernel[1]["depth"] == space.max()["depth"] and kernel[1]["expand"] == space.max()["expand"]
    for _, cfg, _, _ in rec.plans[2]:  # depth_a: D ∈ {3, 4}, width still max
        assert set(cfg["depth"]) <= {3, 4} and {e for e in cfg["expand"] if e} == {6}
    for _, cfg, _, _ in rec.plans[4]:  # expand_a: E ∈ {4, 6}
        assert {e for e in cfg["expand"] if e} <= {4, 6}
    assert all(loss == "teacher_kd" for plan in rec.plans[1:] for *_, loss in plan)
    # the teacher is the full net as it was when the kernel phase began, frozen from then on
    assert probe.step == 1 and probe.outputs_equal
    teacher = policy.teacher
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    moved = [k for k, v in module.supernet.state_dict().items() if k.endswith("weight")
             and not torch.equal(v, probe.net_then[k])]
    assert moved  # the SuperNet kept training...
    assert all(torch.equal(v, probe.teacher_then[k]) for k, v in teacher.state_dict().items())  # ...the teacher not
    assert policy.sorted_phases == ["expand_a", "expand"] and policy.sort_steps == [4, 5]


def test_progressive_shrinking_merges_phases_that_add_nothing(kit):
    module = kit.module(model_kwargs={"kernel_sizes": (7,)})  # kernel not elastic (DεpS's MobileNetV3 recipe)
    policy = ProgressiveShrinking(phase_weights=(1, 1, 1, 1, 1, 1))
    kit.trainer(callbacks=[policy], max_steps=6).fit(module, kit.data())
    assert [(p.name, s, e) for p, s, e, _ in policy.phases] == [
        ("full", 0, 2), ("depth_a", 2, 3), ("depth", 3, 4), ("expand_a", 4, 5), ("expand", 5, 6)
    ]


class _FixedPlan(SandwichRule):
    """A policy that trains the given tasks every step (to test the module's mechanism)."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def plan(self, step):
        return self.make(self.space)


def test_gradients_accumulate_over_subnets_with_beta_then_one_step(kit):
    torch.manual_seed(0)
    module = kit.module(lr=1.0, momentum=0.0, weight_decay=0.0, lr_schedule="constant", label_smoothing=0.1,
                        model_kwargs={"drop_rate": 0.0})
    net = module.supernet
    beta = 0.3
    policy = _FixedPlan(lambda space: [SubNetTask(space.max(), 1.0, "ce", "max"),
                                       SubNetTask(space.min(), beta, "inplace_kd", "min")])
    data = kit.data()
    data.setup()
    x, y = next(iter(data.train_dataloader()))
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    # expected update: −lr · (∇CE_ls(max) + β ∇KD(min ← detached max)) in train mode
    ref = kit.module(model_kwargs={"drop_rate": 0.0})
    ref.supernet.load_state_dict(net.state_dict())
    ref.train()
    ref.supernet.activate(ref.supernet.space.max())
    z = ref.supernet(x)
    loss = torch.nn.functional.cross_entropy(z, y, label_smoothing=0.1)
    loss.backward()
    t = torch.softmax(z.detach(), -1)
    ref.supernet.activate(ref.supernet.space.min())
    zs = ref.supernet(x)
    (beta * torch.nn.functional.cross_entropy(zs, t)).backward()
    expected = {k: before[k] - p.grad for k, p in ref.supernet.named_parameters() if p.grad is not None}
    kit.trainer(callbacks=[policy], max_steps=1).fit(module, data)
    assert module.trainer.global_step == 1  # one optimizer step for both SubNets
    after = dict(net.named_parameters())
    for k, v in expected.items():
        assert torch.allclose(after[k], v, atol=1e-5), k


def test_two_policies_fail_at_setup_naming_them(kit):
    trainer = kit.trainer(callbacks=[DelayedEpsilonShrinking(), SandwichRule()], max_steps=1)
    with pytest.raises(ValueError, match=r"exactly one shrinking policy.*got 2: \['DelayedEpsilonShrinking', "
                                         r"'SandwichRule'\]"):
        trainer.fit(kit.module(), kit.data())


def test_policy_needs_a_supernet_module(kit):
    class Plain(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 2)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0].flatten(1)[:, :2]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(TypeError, match=r"trains a SuperNetModule .*got Plain"):
        kit.trainer(callbacks=[SandwichRule()], max_steps=1).fit(Plain(), kit.data())


def test_ramp_that_does_not_fit_fails_when_fitting_starts(kit):
    trainer = kit.trainer(callbacks=[DelayedEpsilonShrinking(warmup_fraction=0.5, ramp_epochs=2)], max_epochs=1)
    with pytest.raises(ValueError, match=r"does not fit after the switch at step 4 .* allowed at most 4 steps"):
        trainer.fit(kit.module(), kit.data())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"warmup_fraction": 1.5}, r"warmup_fraction must be in \[0, 1\), got 1.5"),
        ({"warmup_fraction": 1.0}, r"warmup_fraction must be in \[0, 1\), got 1.0"),
        ({"ramp_fraction": -0.1}, r"ramp_fraction must be in \[0, 1\], got -0.1"),
        ({"ramp_epochs": -1}, "ramp_epochs must be a number >= 0, got -1"),
        ({"ramp_epochs": 1, "ramp_fraction": 0.1}, "not both"),
        ({"ramp": "cosine"}, r"ramp must be one of \['lr', 'linear'\], got 'cosine'"),
        ({"num_random": -1}, "num_random must be an integer >= 0, got -1"),
    ],
)
def test_delayed_epsilon_shrinking_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DelayedEpsilonShrinking(**kwargs)


def test_progressive_shrinking_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"phase_weights must be 6 numbers >= 0 .*got \[1, 2\]"):
        ProgressiveShrinking(phase_weights=(1, 2))
    with pytest.raises(ValueError, match=r"subnets_per_step must be 6 integers >= 1, got \[1, 1, 2, 2, 4, 0\]"):
        ProgressiveShrinking(subnets_per_step=(1, 1, 2, 2, 4, 0))

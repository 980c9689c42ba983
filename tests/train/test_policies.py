"""Each shrinking policy trains a tiny SuperNet a few CPU steps; which SubNets trained when is recorded and checked."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from ws_train import DelayedEpsilonShrinking, ProgressiveShrinking, SandwichRule, SubNetTask
from ws_train.policies import aggregate_gradients, zero_init_last_bn_
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
    # 8 steps: T_w = round(0.5 × 8) = 4, ramp S = round(0.25 × 8) = 2 steps ending at T_w: [2, 4)
    assert [policy.phase(t) for t in range(8)] == ["warmup"] * 2 + ["ramp"] * 2 + ["shrink"] * 4
    assert rec.roles() == [["max"]] * 2 + [["max", "min", "random", "random"]] * 6
    assert [plan[1][2] for plan in rec.plans[2:]] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]  # β of the min net
    for step, plan in zip(rec.steps[2:], rec.plans[2:]):
        assert plan[0][1] == space.max() and plan[1][1] == space.min()
        assert [c for _, c, _, _ in plan[2:]] == [space.sample(subnet_generator(0, step, i)) for i in (2, 3)]
        assert [loss for *_, loss in plan] == ["ce", "inplace_kd", "inplace_kd", "inplace_kd"]
    # one-time channel sort when the SubNets join (T_w − S), with the optimizer state cleared
    # (momentum would point at old channels)
    assert policy.sort_steps == [2] and policy.sorted
    assert probe.empty[2] is True and probe.empty[1] is False and probe.empty[3] is False
    assert policy.subnet_passes == 2 * 1 + 6 * 4
    assert all(len(losses) == len(plan) for losses, plan in zip(rec.losses, rec.plans))


def test_delayed_epsilon_shrinking_lr_matched_ramp_hand_value(kit):
    module, rec = kit.module(lr=0.05), kit.Recorder()
    policy = DelayedEpsilonShrinking(warmup_fraction=0.5, ramp_fraction=0.25, sort_channels=False)
    kit.trainer(callbacks=[policy, rec], max_steps=6).fit(module, kit.data())
    # 6 steps (max_steps): T_w = round(3) = 3, S = round(1.5) = 2, ramp [1, 3); cosine η(t) = 0.025 (1 + cos(πt/6)):
    # η(1) = 0.025 (1 + √3/2), η(2) = 0.0375, η(3) = 0.025. DεpS: β(t) = (t − 1 + 1)/2 · η(T_w) / η(t)
    assert rec.roles()[:1] == [["max"]]
    assert rec.plans[1][1][2] == pytest.approx(0.5 / (1 + 3 ** 0.5 / 2))  # T_w − S: = 2 − √3 ≈ 0.2679
    assert rec.plans[2][1][2] == pytest.approx(2 / 3)  # T_w − 1: effective lr β·η = η(T_w): 0.025 / 0.0375
    assert rec.plans[3][1][2] == 1.0  # T_w: full weight
    assert policy.sort_steps == []


def test_delayed_epsilon_shrinking_default_ramp_is_5_epochs_ending_at_t_w(kit):
    module, rec = kit.module(), kit.Recorder()
    policy = DelayedEpsilonShrinking(warmup_fraction=0.5, ramp="linear", sort_channels=False)
    # 80 epochs × 8 steps would be 640 steps; stop after 6: the schedule is resolved for the whole run
    kit.trainer(callbacks=[policy, rec], max_epochs=80, max_steps=6).fit(module, kit.data())
    s = policy.schedule
    assert (s.total_steps, s.switch_step, s.ramp_steps, s.ramp_start) == (6, 3, 3, 0)  # max_steps wins: 6 steps
    policy.configure(640, 8)  # the 80-epoch run: T_w = 320, S = 5 epochs = 40 steps (no 10%-of-run cap: 64)
    assert (policy.schedule.ramp_start, policy.schedule.switch_step) == (280, 320)
    assert [policy.beta(t) for t in (279, 280, 319, 320)] == pytest.approx([0.0, 1 / 40, 1.0, 1.0])


def test_sandwich_rule_from_step_zero(kit):
    module, rec = kit.module(), kit.Recorder()
    kit.trainer(callbacks=[SandwichRule(num_random=1, seed=3), rec], max_steps=3).fit(module, kit.data())
    space = module.supernet.space
    assert rec.roles() == [["max", "min", "random"]] * 3
    for step, plan in zip(rec.steps, rec.plans):
        assert plan[2][1] == space.sample(subnet_generator(3, step, 2))
        assert all(w == 1.0 for _, _, w, _ in plan)


class LRProbe(Callback):
    """The learning rate the optimizer uses at each step, and the last-BN γ of the SuperNet at step 0."""

    def __init__(self):
        self.lrs, self.gammas = [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        if self.gammas is None:
            self.gammas = {n: m.weight.detach().clone() for n, m in pl_module.supernet.named_modules()
                           if n.endswith("bn3")}


# ws_ofa_mbv3_035_32 (CIFAR strides 1, 2, 2, 1, 2; widths 8 → 8, 16, 32, 40, 56): every block of stage 0 keeps
# stride 1 and 8 channels, so all four are residual; in stages 1–4 the first block changes the width, the other
# three are residual
MBV3_035_32_RESIDUAL_BN = ([f"stages.0.blocks.{j}.bn3" for j in range(4)]
                           + [f"stages.{s}.blocks.{j}.bn3" for s in range(1, 5) for j in (1, 2, 3)])


def test_zero_init_last_bn_of_residual_blocks(kit):
    net = kit.module().supernet
    assert zero_init_last_bn_(net) == MBV3_035_32_RESIDUAL_BN
    modules = dict(net.named_modules())
    assert all(not modules[n].weight.detach().any() for n in MBV3_035_32_RESIDUAL_BN)
    assert all(torch.equal(modules[f"stages.{s}.blocks.0.bn3"].weight, torch.ones(c))
               for s, c in ((1, 16), (2, 32), (3, 40), (4, 56)))  # the non-residual first blocks keep γ = 1
    assert torch.equal(net.stem.block.bn2.weight, torch.ones(8))  # the fixed stem block too (as DεpS)
    net.eval()
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        assert torch.equal(net.stages[1].blocks[1](x), x)  # a zero-initialised residual block is the identity


def test_zero_init_last_bn_of_resnet_bottlenecks_skips_the_projection_shortcut():
    import timm

    net = timm.create_model("ws_ofa_resnet50_025_32", num_classes=10)
    names = zero_init_last_bn_(net)
    blocks = [(s, j) for s, stage in enumerate(net.stages) for j in range(len(stage.blocks))]
    assert names == [f"stages.{s}.blocks.{j}.bn3" for s, j in blocks]  # every bottleneck is residual
    assert float(net.stages[1].blocks[0].downsample.bn.weight.min()) == 1.0


def test_sandwich_rule_zero_inits_last_bn_and_decays_lr_exponentially(kit):
    module, probe = kit.module(lr=0.05), LRProbe()
    # 8 steps per epoch: decay every 0.25 epochs = 2 steps by 0.97, constant from 97% on (the floor)
    policy = SandwichRule(num_random=0, lr_decay_epochs=0.25, final_lr_fraction=0.97 ** 2)
    kit.trainer(callbacks=[policy, probe], max_steps=7).fit(module, kit.data())
    assert probe.lrs == pytest.approx([0.05, 0.05, 0.0485, 0.0485, 0.047045, 0.047045, 0.047045])
    assert policy.zeroed_bn == MBV3_035_32_RESIDUAL_BN
    assert all(float(probe.gammas[n].abs().sum()) == 0.0 for n in MBV3_035_32_RESIDUAL_BN)
    assert float(probe.gammas["stages.1.blocks.0.bn3"].min()) == 1.0
    assert "lr_at" not in module.__dict__  # the module's own schedule is back after fit

    # resumed (its state says the run began): γ is not zeroed again; lr_schedule="module": the module's cosine
    module, probe = kit.module(lr=0.05), LRProbe()
    again = SandwichRule(num_random=0, lr_schedule="module")
    again.load_state_dict({"initialized": True})
    kit.trainer(callbacks=[again, probe], max_steps=2).fit(module, kit.data())
    assert again.zeroed_bn == [] and float(probe.gammas["stages.0.blocks.0.bn3"].min()) == 1.0
    assert probe.lrs == pytest.approx([0.05, 0.025])  # cosine over 2 steps


def test_progressive_shrinking_restarts_the_lr_in_every_phase(kit):
    module, probe = kit.module(lr=0.05), LRProbe()
    policy = ProgressiveShrinking(phase_weights=(2, 2, 2, 2, 2, 2), sort_channels=False)
    kit.trainer(callbacks=[policy, probe], max_epochs=2, max_steps=12).fit(module, kit.data())
    # two steps per phase; each starts at 0.05 × OFA's rate / 2.6 (2.6, 0.96, 0.08, 0.24, 0.08, 0.24) and its
    # cosine reaches half of it at the second step (5/125 of 2 steps rounds to no warm-up)
    starts = [0.05 * r / 2.6 for r in (2.6, 0.96, 0.08, 0.24, 0.08, 0.24)]
    assert probe.lrs == pytest.approx([v for r in starts for v in (r, r / 2)])
    assert probe.lrs[2] == pytest.approx(0.0184615, rel=1e-5)  # the kernel phase restarts at 0.05 × 0.96 / 2.6
    # after fit the module's own cosine over the 12 steps is back: η(2) = 0.025 (1 + cos(π/6)), not 0.0184615
    assert "lr_at" not in module.__dict__
    assert module.lr_at(2) == pytest.approx(0.025 * (1 + math.cos(math.pi / 6)))

    module, probe = kit.module(lr=0.05), LRProbe()
    policy = ProgressiveShrinking(phase_weights=(2, 2, 2, 2, 2, 2), sort_channels=False, lr_schedule="module")
    kit.trainer(callbacks=[policy, probe], max_steps=4).fit(module, kit.data())
    assert probe.lrs == pytest.approx([0.05 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)])


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

    def __init__(self, make, gradient_aggregation="sum"):
        super().__init__(zero_init_last_bn=False, lr_schedule="module")
        self.make = make
        self.gradient_aggregation = gradient_aggregation

    def plan(self, step):
        return self.make(self.space)


def _one_step_beside_hand_gradients(kit, gradient_aggregation, beta):
    """One optimizer step (lr 1, no momentum or weight decay) on the max net (CE with label smoothing 0.1) and the
    min net (β · KD from the detached max output), aggregated with ``gradient_aggregation``.

    Returns the module after the step, its parameters before it, and a copy of the SuperNet as it was before the
    step holding the gradients computed by hand on the same batch in train mode: ∇CE_ls(max) + β ∇KD(min).
    """
    torch.manual_seed(0)
    module = kit.module(lr=1.0, momentum=0.0, weight_decay=0.0, lr_schedule="constant", label_smoothing=0.1,
                        model_kwargs={"drop_rate": 0.0})
    net = module.supernet
    policy = _FixedPlan(lambda space: [SubNetTask(space.max(), 1.0, "ce", "max"),
                                       SubNetTask(space.min(), beta, "inplace_kd", "min")], gradient_aggregation)
    data = kit.data()
    data.setup()
    x, y = next(iter(data.train_dataloader()))
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    ref = kit.module(model_kwargs={"drop_rate": 0.0})
    ref.supernet.load_state_dict(net.state_dict())
    ref.train()
    ref.supernet.activate(ref.supernet.space.max())
    z = ref.supernet(x)
    torch.nn.functional.cross_entropy(z, y, label_smoothing=0.1).backward()
    ref.supernet.activate(ref.supernet.space.min())
    (beta * torch.nn.functional.cross_entropy(ref.supernet(x), torch.softmax(z.detach(), -1))).backward()
    kit.trainer(callbacks=[policy], max_steps=1).fit(module, data)
    return module, before, ref.supernet


def test_gradients_accumulate_over_subnets_with_beta_then_one_step(kit):
    module, before, ref = _one_step_beside_hand_gradients(kit, "sum", beta=0.3)
    assert module.trainer.global_step == 1  # one optimizer step for both SubNets
    # expected update: −lr · (∇CE_ls(max) + β ∇KD(min ← detached max))
    expected = {k: before[k] - p.grad for k, p in ref.named_parameters() if p.grad is not None}
    after = dict(module.supernet.named_parameters())
    for k, v in expected.items():
        assert torch.allclose(after[k], v, atol=1e-5), k


def test_aggregate_gradients_sum_avg_avg_sqrt_by_hand():
    # w has 4 elements: the max net (β = 1) reads all of them, the min net (β = 0.5) the first two; the
    # accumulated gradient Σ β_k ∇_k is [1, 2, 3, 4]. k (2×2): only a third SubNet (β = 2) reads its first row
    # (the other row, read by nobody, has count 0 and is left alone)
    subnets = [(1.0, {"w": (slice(0, 4),)}), (0.5, {"w": (slice(0, 2),)}), (2.0, {"k": (slice(0, 1), slice(0, 2))})]
    for mode, want_w, want_k in (("sum", [1, 2, 3, 4], [[5, 6], [7, 8]]),
                                 ("avg", [1 / 1.5, 2 / 1.5, 3, 4], [[2.5, 3], [7, 8]]),
                                 ("avg_sqrt", [1 / 1.5 ** 0.5, 2 / 1.5 ** 0.5, 3, 4], [[5 / 2 ** 0.5, 6 / 2 ** 0.5],
                                                                                      [7, 8]])):
        grads = {"w": torch.tensor([1.0, 2.0, 3.0, 4.0]), "k": torch.tensor([[5.0, 6.0], [7.0, 8.0]])}
        aggregate_gradients(grads, subnets, mode)
        assert grads["w"].tolist() == pytest.approx(want_w), mode
        assert grads["k"].tolist() == [pytest.approx(row) for row in want_k], mode
    with pytest.raises(ValueError, match=r"must be one of \['sum', 'avg', 'avg_sqrt'\], got 'mean'"):
        aggregate_gradients({}, [], "mean")


def test_avg_gradient_aggregation_divides_by_the_subnets_reading_each_weight(kit):
    beta = 0.3
    module, before, ref = _one_step_beside_hand_gradients(kit, "avg", beta)
    # expected update: −lr · (∇CE_ls(max) + β ∇KD(min)) / (1 + β · mask_min), per element
    min_regions = ref.weight_slices(ref.space.min())
    expected, shared = {}, 0
    for k, p in ref.named_parameters():
        if p.grad is None:
            continue
        count = torch.ones_like(p)
        if k in min_regions:
            count[min_regions[k]] += beta
            shared += 1
        expected[k] = before[k] - p.grad / count
    assert shared > 10  # the min net shares many tensors with the max net: the division matters
    after = dict(module.supernet.named_parameters())
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
    with pytest.raises(ValueError, match=r"does not fit before the switch at step 4 .* allowed at most 4 steps"):
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
        ({"gradient_aggregation": "mean"},
         r"gradient_aggregation must be one of \['sum', 'avg', 'avg_sqrt'\], got 'mean'"),
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
    with pytest.raises(ValueError, match=r"phase_lr must be 6 numbers > 0, got \[1, 0, 1, 1, 1, 1\]"):
        ProgressiveShrinking(phase_lr=(1, 0, 1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"phase_warmup must be 6 fractions in \[0, 1\)"):
        ProgressiveShrinking(phase_warmup=(0, 1, 0, 0, 0, 0))
    with pytest.raises(ValueError, match=r"lr_schedule must be one of \['per_phase', 'module'\], got 'cosine'"):
        ProgressiveShrinking(lr_schedule="cosine")


def test_sandwich_rule_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"lr_schedule must be one of \['bignas', 'module'\], got 'cosine'"):
        SandwichRule(lr_schedule="cosine")
    with pytest.raises(ValueError, match=r"lr_decay must be in \(0, 1\], got 1.5"):
        SandwichRule(lr_decay=1.5)
    with pytest.raises(ValueError, match="lr_decay_epochs must be a number > 0, got 0"):
        SandwichRule(lr_decay_epochs=0)
    with pytest.raises(ValueError, match=r"final_lr_fraction must be in \[0, 1\], got -0.1"):
        SandwichRule(final_lr_fraction=-0.1)

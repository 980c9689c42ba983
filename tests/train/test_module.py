"""SuperNetModule: construction checks, plain training without a policy, dropout/resolution per SubNet, export."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from ws_train import SandwichRule, SuperNetModule


def test_rejects_what_is_not_a_supernet():
    with pytest.raises(TypeError, match=r"supernet must be a ws_core.SuperNet or the name .*got Linear"):
        SuperNetModule(nn.Linear(2, 2))
    with pytest.raises(ValueError,
                       match=r"unknown SuperNet 'ws_nope'; allowed: \['ws_ofa_mbv3_035_28', 'ws_ofa_mbv3_035_32'"):
        SuperNetModule("ws_nope")
    with pytest.raises(TypeError, match=r"model 'mobilenetv3_small_050' is a MobileNetV3, not a ws_core.SuperNet"):
        SuperNetModule("mobilenetv3_small_050")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "lamb"}, r"optimizer must be one of \['sgd', 'adamw'\], got 'lamb'"),
        ({"lr_schedule": "step"}, r"lr_schedule must be one of \['cosine', 'constant'\], got 'step'"),
        ({"lr": 0}, "lr must be > 0, got 0"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\), got 1.0"),
        ({"kd_temperature": -1}, "kd_temperature must be > 0, got -1"),
        ({"grad_clip_norm": 0}, "grad_clip_norm must be > 0 or None, got 0"),
    ],
)
def test_rejects_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SuperNetModule("ws_ofa_mbv3_035_32", num_classes=10, **kwargs)


def test_instance_checks(kit):
    net = kit.module().supernet
    assert SuperNetModule(net).supernet is net
    with pytest.raises(ValueError, match="num_classes=5 but the SuperNet has 10 classes"):
        SuperNetModule(net, num_classes=5)
    with pytest.raises(ValueError, match="model_kwargs apply only when supernet is a registered name"):
        SuperNetModule(net, model_kwargs={"drop_rate": 0.0})


def test_ddp_without_unused_parameter_search_and_sync_batchnorm_are_rejected(kit):
    module = kit.module()
    module._trainer = SimpleNamespace(strategy=DDPStrategy(find_unused_parameters=False))
    with pytest.raises(ValueError, match=r"needs find_unused_parameters=True .*ddp_find_unused_parameters_true"):
        module.setup("fit")
    module._trainer = SimpleNamespace(strategy=DDPStrategy(find_unused_parameters=True))
    module.setup("fit")  # accepted
    module._trainer = None
    module.supernet = nn.SyncBatchNorm.convert_sync_batchnorm(module.supernet)
    with pytest.raises(ValueError, match=r"allowed: Trainer\(sync_batchnorm=False\)"):
        module.on_fit_start()


def test_without_a_policy_the_max_net_trains_alone(kit):
    module, rec = kit.module(), kit.Recorder()
    kit.trainer(callbacks=[rec], max_steps=3).fit(module, kit.data())
    assert rec.roles() == [["max"]] * 3 and module.trainer.global_step == 3
    assert all(cfg == module.supernet.space.max() for plan in rec.plans for _, cfg, _, _ in plan)


def test_dropout_only_on_label_trained_subnets_and_inputs_resized_to_elastic_resolution(kit):
    module = kit.module(model_kwargs={"resolutions": (4, 6, 8)})  # the 32×32 space with elastic resolution
    seen = []
    module.supernet.stem.register_forward_pre_hook(lambda m, args: seen.append([args[0].shape[-1]]))
    module.supernet.head.drop.register_forward_pre_hook(lambda m, args: seen[-1].append(m.training))
    rec = kit.Recorder()
    kit.trainer(callbacks=[SandwichRule(num_random=1), rec], max_steps=1).fit(module, kit.data())
    (plan,) = rec.plans
    assert [cfg["resolution"] for _, cfg, _, _ in plan][:2] == [8, 4]
    # max: full resolution, dropout on; min and random distill: their resolution, dropout off
    assert seen == [[cfg["resolution"], role == "max"] for role, cfg, _, _ in plan]


def test_lr_schedule_is_a_function_of_the_step(kit):
    module = kit.module(lr=0.1, lr_schedule="constant", warmup_epochs=0.5)
    trainer = kit.trainer(max_steps=1)
    trainer.fit(module, kit.data())  # 8 steps per epoch: 4 warm-up steps
    assert [module.lr_at(s) for s in range(5)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])


def test_save_supernet_writes_a_ws_core_checkpoint(kit, tmp_path):
    from ws_core.checkpoint import load_checkpoint

    module = kit.module()
    path = module.save_supernet(str(tmp_path / "net.safetensors"))
    fresh = kit.module().supernet
    load_checkpoint(fresh, path)
    for (k, a), b in zip(module.supernet.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k


def test_val_metrics_are_the_max_subnets_with_recalibrated_bn_and_running_stats_are_put_back(kit):
    from ws_core.bn import snapshot_bn_buffers
    from ws_train import SandwichRule, SubNetValidation

    torch.manual_seed(0)
    module = kit.module(val_bn_batches=2)
    check = SubNetValidation(("max",), bn_batches=2)
    trainer = kit.trainer(callbacks=[SandwichRule(), check], limit_val_batches=None)
    data = kit.data()
    trainer.fit(module, data)
    before = snapshot_bn_buffers(module.supernet)
    metrics = trainer.validate(module, data, verbose=False)[0]
    # the same recalibration (same batches) as SubNetValidation's for the max SubNet: the same accuracy
    assert metrics["val/acc"] == pytest.approx(check.accuracy("max"))
    after = snapshot_bn_buffers(module.supernet)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # without recalibration the running statistics (every SubNet's mixed) are used: another number
    plain = kit.module(val_bn_batches=0)
    plain.load_state_dict(module.state_dict())
    plain_metrics = trainer.validate(plain, data, verbose=False)[0]
    assert plain_metrics["val/loss"] != pytest.approx(metrics["val/loss"])


def test_channels_last_training_matches_and_keeps_the_format(kit):
    torch.manual_seed(0)
    a = kit.module()
    torch.manual_seed(0)
    b = kit.module(channels_last=True)
    for m in (a, b):
        kit.trainer(max_steps=2).fit(m, kit.data())
    # the same updates up to float rounding (different reduction orders in the kernels)
    for (name, p), q in zip(a.supernet.named_parameters(), b.supernet.parameters()):
        torch.testing.assert_close(p, q, atol=3e-3, rtol=1e-2, msg=name)
    conv = b.supernet.stem.conv.conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    b.supernet.sort_channels()  # DεS sorts channels once: the permutation keeps the format
    block = b.supernet.stages[0].blocks[0]
    assert block.conv_pw.weight.is_contiguous(memory_format=torch.channels_last)
    assert block.conv_dw.weight.is_contiguous(memory_format=torch.channels_last)


def test_val_bn_batches_is_checked(kit):
    with pytest.raises(ValueError, match=r"val_bn_batches must be an integer >= 0, got -1"):
        kit.module(val_bn_batches=-1)

"""Resuming from a mid-run checkpoint reproduces the uninterrupted run's next losses (policy state restored)."""

from __future__ import annotations

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from ws_train import DelayedEpsilonShrinking, ProgressiveShrinking, SubNetValidation


def _run(kit, tmp_path, make_policy, ckpt_path=None, max_epochs=2):
    rec = kit.Recorder()
    policy = make_policy()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    trainer = kit.trainer(callbacks=[policy, SubNetValidation(bn_batches=1), rec, ckpt], max_epochs=max_epochs,
                          limit_train_batches=2, limit_val_batches=1, enable_checkpointing=True)
    trainer.fit(kit.module(), kit.data(), ckpt_path=ckpt_path)
    return rec, policy


def _flat(losses):
    return [v for step in losses for v in step]


def _des():
    # 4 steps, 2 per epoch: T_w = 3, ε ramp over steps 1–2 (SubNets join and channels sorted at step 1);
    # the checkpoint after epoch 0 is mid-ramp
    return DelayedEpsilonShrinking(warmup_fraction=0.75, ramp_fraction=0.5)


def _ps():
    # 4 steps: full [0,1), depth_a [1,2), depth [2,3), expand [3,4) (kernel and expand_a are empty); the teacher
    # exists at the checkpoint after epoch 0, the width phase (with its channel sort) comes after it
    return ProgressiveShrinking(phase_weights=(1, 1, 1, 1, 1, 1))


@pytest.mark.parametrize("make_policy", [_des, _ps], ids=["DelayedEpsilonShrinking", "ProgressiveShrinking"])
def test_resume_reproduces_next_losses(kit, tmp_path, make_policy, monkeypatch):
    full, policy = _run(kit, tmp_path / "a", make_policy)
    assert full.steps == list(range(4))
    checkpoint = tmp_path / "a" / "ckpt" / "epoch=0.ckpt"
    resumed, resumed_policy = _run(kit, tmp_path / "b", make_policy, ckpt_path=checkpoint)
    assert resumed.steps == [2, 3]
    assert [[c.id for _, c, _, _ in p] for p in resumed.plans] == [[c.id for _, c, _, _ in p] for p in full.plans[2:]]
    assert _flat(resumed.losses) == pytest.approx(_flat(full.losses[2:]), rel=1e-6, abs=1e-7)
    assert resumed_policy.subnet_passes == policy.subnet_passes
    assert resumed_policy.sort_steps == policy.sort_steps

    # the control: dropping the policy's checkpoint state (sorted flag / teacher) changes the next losses
    monkeypatch.setattr(type(policy), "load_state_dict", lambda self, state: None)
    control, _ = _run(kit, tmp_path / "c", make_policy, ckpt_path=checkpoint)
    assert _flat(control.losses) != pytest.approx(_flat(full.losses[2:]), rel=1e-6, abs=1e-7)

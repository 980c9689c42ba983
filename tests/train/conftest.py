"""Shared fixtures of the ws-train tests: a tiny SuperNet, 8×8 digits, fast Trainer settings."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from ws_train import DigitsDataModule, SuperNetModule


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny forwards are overhead-bound; one intra-op thread is faster on the shared 2-core runners."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_module(**kwargs) -> SuperNetModule:
    kwargs.setdefault("lr", 0.05)
    return SuperNetModule("ws_ofa_mbv3_035_32", num_classes=10, **kwargs)


def make_data(**kwargs) -> DigitsDataModule:
    """64 training digits at 8×8 in batches of 8: 8 optimizer steps per epoch."""
    kwargs.setdefault("image_size", 8)
    kwargs.setdefault("batch_size", 8)
    kwargs.setdefault("train_size", 64)
    return DigitsDataModule(**kwargs)


def make_trainer(**kwargs) -> L.Trainer:
    defaults = dict(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, accelerator="cpu",
                    devices=1)
    defaults.update(kwargs)
    return L.Trainer(**defaults)


class Recorder(Callback):
    """Records, per optimizer step, the SubNets trained (role, config, β, loss kind) and their losses."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.plans: list[list] = []
        self.losses: list[list[float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step, tasks = pl_module.last_plan
        self.steps.append(step)
        self.plans.append([(t.role, t.config, t.weight, t.loss) for t in tasks])
        self.losses.append([float(v) for v in outputs["losses"]])

    def roles(self) -> list[list[str]]:
        return [[r for r, *_ in plan] for plan in self.plans]


@pytest.fixture
def kit():
    """Factories for tests (conftest helpers cannot be imported under --import-mode=importlib)."""
    from types import SimpleNamespace

    return SimpleNamespace(module=make_module, data=make_data, trainer=make_trainer, Recorder=Recorder)

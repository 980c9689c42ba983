"""Lightning DDP (2 CPU processes, gloo): every rank trains the same SubNets and the weights stay identical."""

from __future__ import annotations

import json
import multiprocessing
import sys

import pytest
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy

from ws_train import DelayedEpsilonShrinking


class RankRecorder(Callback):
    def __init__(self, out):
        self.out, self.plans = out, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step, tasks = pl_module.last_plan
        self.plans.append([step, [t.config.id for t in tasks], [t.weight for t in tasks]])

    def on_train_end(self, trainer, pl_module):
        params = {k: v.detach().double().sum().item() for k, v in pl_module.supernet.state_dict().items()
                  if v.is_floating_point() and "running" not in k}  # BN running stats are per rank, as in OFA
        record = {"world": trainer.world_size, "plans": self.plans, "params": params,
                  "sort_steps": pl_module.policy.sort_steps if pl_module.policy else None}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods(),
                    reason="forks two CPU training processes (Lightning's ddp_fork start method needs fork)")
def test_ddp_ranks_train_the_same_subnets_and_stay_in_sync(kit, tmp_path):
    policy = DelayedEpsilonShrinking(warmup_fraction=0.75, ramp_fraction=0.5)
    strategy = DDPStrategy(find_unused_parameters=True, start_method="fork", process_group_backend="gloo")
    trainer = kit.trainer(callbacks=[policy, RankRecorder(tmp_path)], max_steps=4, devices=2, strategy=strategy)
    trainer.fit(kit.module(), kit.data())
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert [p[0] for p in r0["plans"]] == [0, 1, 2, 3]
    assert r0["plans"] == r1["plans"]  # same SubNets and β on both ranks, without communication
    assert [len(p[1]) for p in r0["plans"]] == [1, 4, 4, 4] and r0["sort_steps"] == r1["sort_steps"] == [1]
    assert r0["params"] == pytest.approx(r1["params"], rel=1e-9, abs=1e-9)  # gradients were all-reduced

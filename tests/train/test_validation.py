"""SubNetValidation: recalibrated per-SubNet accuracy, logged through any Lightning logger, side-effect free."""

from __future__ import annotations

import csv
import json

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, Logger

from ws_core.bn import recalibrate_bn
from ws_train import SandwichRule, SubNetValidation
from ws_train.sampling import subnet_generator


class MemoryLogger(Logger):
    """A minimal custom logger: SubNetValidation only goes through LightningModule.log."""

    def __init__(self):
        super().__init__()
        self.metrics: list[dict] = []

    @property
    def name(self):
        return "memory"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.metrics.append(dict(metrics))


def test_logs_per_subnet_accuracy_and_mean_to_csv_and_custom_logger(kit, tmp_path):
    csv_logger, memory = CSVLogger(tmp_path, name="run"), MemoryLogger()
    val = SubNetValidation(("min", "max"), num_random=1, bn_batches=1)
    every_other = SubNetValidation(("min",), bn_batches=1, every_n_epochs=2)  # a second instance, other settings
    module = kit.module()
    trainer = kit.trainer(callbacks=[SandwichRule(), val, every_other], logger=[csv_logger, memory],
                          limit_train_batches=2, limit_val_batches=2, log_every_n_steps=1)
    trainer.fit(module, kit.data())
    assert val.state_key != every_other.state_key and every_other.history == []  # epoch 1 of 2: not its turn
    space = module.supernet.space
    rand = space.sample(subnet_generator(0, 0, 0))
    ids = [space.min().id, space.max().id, rand.id]
    assert list(val.subnets) == ids and list(val.labels.values()) == ["min", "max", "random"]
    keys = [f"val/acc/{i}" for i in ids] + ["val/acc/mean"]
    with open(csv_logger.log_dir + "/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/acc/mean")]
    assert len(rows) == 1 and all(k in rows[0] for k in keys)
    accs = [float(rows[0][f"val/acc/{i}"]) for i in ids]
    assert float(rows[0]["val/acc/mean"]) == pytest.approx(sum(accs) / 3)
    assert accs == pytest.approx([val.results[i] for i in ids])
    assert val.accuracy("min") == val.results[ids[0]]
    logged = {k: v for m in memory.metrics for k, v in m.items()}
    assert all(k in logged for k in keys)
    assert len(val.history) == 1 and val.history[0]["step"] == 2


def test_accuracy_matches_independent_recalibration_and_leaves_the_supernet_untouched(kit, tmp_path):
    torch.manual_seed(0)
    module = kit.module()
    net = module.supernet
    data = kit.data(calibration_batch_size=16)
    data.setup()
    given = net.space.sample(torch.Generator().manual_seed(5))
    pareto = tmp_path / "pareto.json"
    pareto.write_text(json.dumps([{"config": given.to_dict()}]))
    val = SubNetValidation(("min",), pareto_file=str(pareto), bn_batches=2)
    # give the SuperNet some non-default BN statistics first, as after training
    net.train()
    with torch.no_grad():
        for x, _ in list(data.train_dataloader())[:2]:
            net(x)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.activate(net.space.max())
    kit.trainer(callbacks=[val], limit_val_batches=3).validate(module, data)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics and weights restored
    assert net.active == net.space.max()
    assert val.labels == {net.space.min().id: "min", given.id: "given"}
    # the same numbers, computed by hand: recalibrate a copy on the same batches, run the first 3 val batches
    for cfg in (net.space.min(), given):
        ref = kit.module().supernet  # a fresh SuperNet with the same state (not a deepcopy: see ws-core note)
        ref.load_state_dict(net.state_dict())
        recalibrate_bn(ref, data.calibration_dataloader(), cfg, num_batches=2)
        ref.eval()
        ref.activate(cfg)
        preds, targets = [], []
        with torch.no_grad():
            for i, (x, y) in enumerate(data.val_dataloader()):
                if i == 3:
                    break
                preds.append(ref(x))
                targets.append(y)
        expected = (torch.cat(preds).argmax(1) == torch.cat(targets)).float().mean()  # top-1
        assert val.results[cfg.id] == pytest.approx(float(expected))


def test_validation_arguments_and_module_checks(kit):
    with pytest.raises(ValueError, match=r"named SubNets allowed are \['min', 'max'\] or configs, got 'mid'"):
        SubNetValidation(("min", "mid"))
    with pytest.raises(ValueError, match="bn_batches must be an integer >= 1, got 0"):
        SubNetValidation(bn_batches=0)
    with pytest.raises(ValueError, match=r"pareto_file 'nope.json' does not exist"):
        SubNetValidation(pareto_file="nope.json")
    with pytest.raises(ValueError, match="no SubNets chosen"):
        SubNetValidation(())

    class Plain(L.LightningModule):
        def validation_step(self, batch, batch_idx):
            pass

    with pytest.raises(TypeError, match=r"needs a LightningModule with a ws_core.SuperNet .*got Plain"):
        kit.trainer(callbacks=[SubNetValidation()]).validate(Plain(), kit.data())
    with pytest.raises(ValueError, match="invalid SubNet config"):
        kit.trainer(callbacks=[SubNetValidation([{"depth": [9] * 5}])]).validate(kit.module(), kit.data())

"""BatchNorm in federated training: ``bn-mode = "federated"`` (BN trained, its affine and running statistics
averaged, SuperFedNAS's ``--use_bn``) and ``"frozen"`` (SuperFedNAS's default: every BN an untrained identity)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Context, Message
from torch import nn

from ws_fed import FedConfig, InProcessGrid, run_federated
from ws_fed.client_app import app as client_app
from ws_fed.federated import evaluators
from ws_fed.task import make_loader, set_identity_bn, supernet_arrays, train_subnet

TINY = dict(num_server_rounds=1, local_steps=1, batch_size=16, min_train_nodes=3, min_available_nodes=3)
IDENTITY = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}


def bn_keys(net) -> dict[str, float]:
    """Every BN affine / statistics key of ``net`` and its identity value."""
    return {f"{name}.{field}": value for name, m in net.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) for field, value in IDENTITY.items()}


def perturb_bn(net) -> None:
    with torch.no_grad():
        for key in bn_keys(net):
            net.state_dict()[key].fill_(0.3 if key.endswith("mean") or key.endswith("bias") else 2.0)


def recording(replies: list[Message]):
    def app(msg: Message, context: Context) -> Message:
        out = client_app(msg, context)
        replies.append(out)
        return out

    return app


def test_frozen_bn_training_leaves_every_bn_entry_and_mode_as_it_was(net, digits):
    set_identity_bn(net)
    before = supernet_arrays(net)
    net.eval()
    loader = make_loader(digits.train, 32, shuffle=True, seed=0)
    train_subnet(net, net.space.max(), loader, max_steps=3, lr=0.1, frozen_bn=True, seed=0)
    after = supernet_arrays(net)
    for key, value in bn_keys(net).items():
        assert np.all(after[key] == value), key
    # it trained (with identity BN only the head gets gradients above float32 resolution on this SuperNet)
    assert not np.array_equal(after["head.classifier.bias"], before["head.classifier.bias"])
    assert not any(m.training for m in net.modules())                     # modes restored
    assert all(p.requires_grad for p in net.parameters())                 # BN parameters released again

    train_subnet(net, net.space.max(), loader, max_steps=1, lr=0.1, seed=0)  # federated: statistics move
    moved = supernet_arrays(net)
    assert not np.array_equal(moved["stem.conv.bn.running_mean"], after["stem.conv.bn.running_mean"])


def test_a_frozen_bn_round_keeps_every_bn_an_identity(net):
    """SuperFedNAS's default: the server starts from identity BN, the clients return identity BN, the
    aggregate is identity BN (exactly), although the model trained."""
    perturb_bn(net)
    before = supernet_arrays(net)
    cfg = FedConfig(**TINY, bn_mode="frozen")
    replies: list[Message] = []
    with InProcessGrid(recording(replies), num_nodes=3, run_config=cfg.to_run_config()) as grid:
        run = run_federated(grid, cfg, net=net)
    assert run.strategy.costs[0].accepted == 3 == len(replies)
    keys = bn_keys(run.net)
    after = supernet_arrays(run.net)
    for key, value in keys.items():
        assert np.all(after[key] == value), key
        for reply in replies:
            if key in reply.content["arrays"]:
                assert np.all(reply.content["arrays"][key].numpy() == value), key
    assert not np.array_equal(after["head.classifier.bias"], before["head.classifier.bias"])


def test_a_federated_bn_round_averages_the_clients_running_statistics(net):
    """``bn-mode = "federated"``: the server's BN running statistics after a round are the clients'
    average, weighted as FedAvg weights (by num-examples), and are no longer the initial ones."""
    subnet = net.space.min()
    cfg = FedConfig(**TINY, bn_mode="federated")
    replies: list[Message] = []
    with InProcessGrid(recording(replies), num_nodes=3, run_config=cfg.to_run_config()) as grid:
        run = run_federated(grid, cfg, net=net, subnet=subnet)
    assert len(replies) == 3
    region = run.net.weight_slices(subnet)
    n = np.array([float(r.content["metrics"]["num-examples"]) for r in replies])
    after = supernet_arrays(run.net)
    for key in ("stem.conv.bn.running_mean", "stem.conv.bn.running_var", "stem.conv.bn.weight"):
        got = after[key][region[key]]
        clients = np.stack([r.content["arrays"][key].numpy() for r in replies])
        np.testing.assert_allclose(got, (n[:, None] * clients).sum(0) / n.sum(), rtol=1e-6, err_msg=key)
    assert not np.allclose(after["stem.conv.bn.running_mean"][region["stem.conv.bn.running_mean"]], 0.0)


@pytest.mark.parametrize("mode, recalibrates", [("federated", True), ("frozen", False)])
def test_evaluation_recalibrates_bn_only_when_bn_was_trained(net, digits, mode, recalibrates):
    val, test = evaluators(net, digits, FedConfig(bn_mode=mode))
    assert (val.bn_loader is not None) is recalibrates and (test.bn_loader is not None) is recalibrates


def test_bn_mode_is_checked():
    with pytest.raises(ValueError, match="'bn-mode' must be 'federated' or 'frozen', got 'local'"):
        FedConfig.from_run_config({"bn-mode": "local"})


def test_local_training_defaults_are_superfednas_plain_sgd():
    cfg = FedConfig()
    assert (cfg.lr, cfg.momentum, cfg.weight_decay) == (0.1, 0.0, 0.0)

"""End to end in one process: the real ClientApp and ServerApp code through an InProcessGrid."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from ws_fed import FedConfig, InProcessGrid, run_federated
from ws_fed.client_app import app as client_app
from ws_fed.federated import round_costs
from ws_fed.server_app import main as server_main
from ws_fed.task import subnet_arrays, supernet_arrays

TINY = dict(num_server_rounds=2, local_steps=1, batch_size=16, min_train_nodes=3, min_available_nodes=3)


def test_superfednas_rounds_in_process(net):
    cfg = FedConfig(**TINY)
    before = supernet_arrays(net)
    with InProcessGrid(client_app, num_nodes=3, run_config=cfg.to_run_config()) as grid:
        run = run_federated(grid, cfg, net=net)
    costs = run.strategy.costs
    assert [c.accepted for c in costs] == [3, 3] and all(c.aggregated for c in costs)
    assert all(c.bytes_up == c.bytes_down > 0 for c in costs)
    assert all(c.client_macs > 0 for c in costs)
    after = supernet_arrays(run.net)
    assert not np.array_equal(after["stem.conv.conv.weight"], before["stem.conv.conv.weight"])
    assert run.result.train_metrics_clientapp[2]["replies-accepted"] == 3
    assert json.dumps(round_costs(run.strategy))  # JSON-ready


def flaky(bad_node_index: int, mode: str):
    """The real ClientApp, except that one node raises or returns a corrupted reply."""

    def app(msg: Message, context: Context) -> Message:
        out = client_app(msg, context)
        if context.node_config["partition-id"] != bad_node_index:
            return out
        if mode == "raise":
            raise RuntimeError("simulated crash")
        arrays = {k: a.numpy() for k, a in out.content["arrays"].items()}
        arrays["stem.conv.conv.weight"] = np.full_like(arrays["stem.conv.conv.weight"], np.nan)
        out.content["arrays"] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
        return out

    return app


@pytest.mark.parametrize("mode, counter", [("raise", "failed"), ("nan", "rejected")])
def test_a_failing_or_corrupt_client_does_not_stop_or_corrupt_training(net, mode, counter):
    cfg = FedConfig(**{**TINY, "num_server_rounds": 1})
    with InProcessGrid(flaky(0, mode), num_nodes=3, run_config=cfg.to_run_config()) as grid:
        run = run_federated(grid, cfg, net=net)
    cost = run.strategy.costs[0]
    assert getattr(cost, counter) == 1 and cost.accepted == 2 and cost.aggregated
    assert all(np.isfinite(v).all() for v in supernet_arrays(run.net).values())


def test_min_train_replies_keeps_the_initial_model(net):
    cfg = FedConfig(**{**TINY, "num_server_rounds": 1, "min_train_replies": 3})
    before = supernet_arrays(net)
    with InProcessGrid(flaky(1, "raise"), num_nodes=3, run_config=cfg.to_run_config()) as grid:
        run = run_federated(grid, cfg, net=net)
    assert run.strategy.costs[0].aggregated is False
    for k, v in supernet_arrays(run.net).items():
        np.testing.assert_array_equal(v, before[k])


def test_client_app_rejects_a_mismatched_payload_and_missing_partition(net):
    cfg = FedConfig(**TINY)
    subnet = net.space.min()
    arrays = subnet_arrays(net, subnet)
    arrays.pop("stem.conv.conv.weight")
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                          "config": ConfigRecord({"subnet": subnet.to_json(), "server-round": 1})})
    with InProcessGrid(client_app, num_nodes=2, run_config=cfg.to_run_config()) as grid:
        msg = Message(content, dst_node_id=1000, message_type=MessageType.TRAIN)
        with pytest.raises(ValueError, match="missing key"):
            client_app(msg, grid.context(1000))
        ctx = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config=cfg.to_run_config())
        with pytest.raises(ValueError, match="partition-id and num-partitions"):
            client_app(msg, ctx)


def test_clients_train_with_the_lr_the_server_anneals(net):
    cfg = FedConfig(**{**TINY, "num_server_rounds": 3, "lr": 0.06, "lr_schedule": "linear", "lr_final": 0.0})
    received: dict[int, set[float]] = {}

    def recording(msg: Message, context: Context) -> Message:
        received.setdefault(int(msg.content["config"]["server-round"]), set()).add(msg.content["config"]["lr"])
        return client_app(msg, context)

    with InProcessGrid(recording, num_nodes=3, run_config=cfg.to_run_config()) as grid:
        run_federated(grid, cfg, net=net)
    assert sorted(received) == [1, 2, 3] and all(len(lrs) == 1 for lrs in received.values())
    assert [received[r].pop() for r in (1, 2, 3)] == pytest.approx([0.06, 0.04, 0.02])  # linear over T = 3


def test_client_update_ignores_what_its_scratch_model_holds_outside_the_subnet(net):
    """The ClientApp reuses one scratch SuperNet per thread; only the received slices may matter.
    Everything else is set to NaN before the second call: any read of it would poison the reply."""
    import torch

    from ws_fed.task import scratch_supernet

    cfg = FedConfig(**{**TINY, "local_steps": 2})
    subnet = net.space.sample(torch.Generator().manual_seed(3))
    arrays = subnet_arrays(net, subnet)

    def train_reply(grid):
        content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                              "config": ConfigRecord({"subnet": subnet.to_json(), "server-round": 2, "lr": 0.05})})
        msg = Message(content, dst_node_id=1001, message_type=MessageType.TRAIN)
        out = client_app(msg, grid.context(1001))
        return {k: a.numpy() for k, a in out.content["arrays"].items()}

    with InProcessGrid(client_app, num_nodes=2, run_config=cfg.to_run_config()) as grid:
        first = train_reply(grid)
        scratch = scratch_supernet(cfg.model, cfg.image_size, cfg.seed, channels_last=cfg.channels_last)
        with torch.no_grad():
            for t in scratch.state_dict().values():
                if t.is_floating_point():
                    t.fill_(float("nan"))
        second = train_reply(grid)
    assert set(first) == set(second) == set(arrays)
    for key in first:
        np.testing.assert_array_equal(second[key], first[key], err_msg=key)
    assert not np.array_equal(first["stem.conv.conv.weight"], arrays["stem.conv.conv.weight"])  # it trained


def test_federated_evaluation_of_the_max_subnet(net):
    cfg = FedConfig(**{**TINY, "num_server_rounds": 1, "fraction_evaluate": 0.5})  # 2 of 3 nodes
    with InProcessGrid(client_app, num_nodes=3, run_config=cfg.to_run_config()) as grid:
        run = run_federated(grid, cfg, net=net)
    metrics = run.result.evaluate_metrics_clientapp[1]
    assert 0.0 <= metrics["eval-accuracy"] <= 1.0 and np.isfinite(metrics["eval-loss"])


def test_server_app_main_trains_specialises_and_saves(tmp_path, net):
    from ws_core.checkpoint import read_checkpoint_metadata

    macs = sorted({int(2.0e6)})
    cfg = FedConfig(**{**TINY, "num_server_rounds": 1, "target_macs": ",".join(map(str, macs)),
                       "search_population": 4, "search_generations": 1, "bn_batches": 1,
                       "output_dir": str(tmp_path)})
    with InProcessGrid(client_app, num_nodes=3, run_config=cfg.to_run_config()) as grid:
        server_main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                  run_config=cfg.to_run_config()))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cost"]["client_macs"] > 0 and len(summary["rounds"]) == 1
    spec = summary["specialisation"][0]
    assert spec["macs"] <= 2.0e6 and 0 <= spec["test_accuracy"] <= 1
    assert read_checkpoint_metadata(tmp_path / "supernet.safetensors")["extra"]["image_size"] == 8

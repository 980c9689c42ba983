"""The Flower ClientApp: train (or evaluate) the SubNet the server sent, on this node's partition.

A train message carries the SubNet's weight slices (``content["arrays"]``) and a config with the SubNet
as JSON (``config["subnet"]``) and the local-training settings. The app loads the slices into a local
SuperNet, activates the SubNet (ws-core, in place), trains it on this node's partition of the data and
replies with the same keys at the same shapes, plus ``train-loss``, ``num-examples`` (local data
size) and ``train-samples`` (samples processed, for the compute count). With ``bn-mode = "frozen"``
(SuperFedNAS's default) the client makes every BN layer an identity on receipt and does not train it
(:data:`ws_fed.task.BN_MODES`).

Which partition a node holds comes from its node config: ``partition-id`` and ``num-partitions``
(filled in by Flower's simulation engine; in a deployment pass
``flower-supernode --node-config "partition-id=0 num-partitions=2"``).
"""

from __future__ import annotations

from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ws_core import SubNetConfig

from .config import FedConfig
from .task import (
    client_dataset,
    evaluate_subnet,
    load_data,
    load_subnet_arrays,
    make_loader,
    scratch_supernet,
    set_identity_bn,
    subnet_arrays,
    train_subnet,
)

__all__ = ["app", "evaluate", "train"]

app = ClientApp()


def _node_partition(context: Context) -> tuple[int, int]:
    node_config = context.node_config
    if "partition-id" not in node_config or "num-partitions" not in node_config:
        raise ValueError(
            "this SuperNode has no data partition: its node config needs partition-id and num-partitions "
            f"(flower-supernode --node-config \"partition-id=0 num-partitions=2\"), got {dict(node_config)}"
        )
    return int(node_config["partition-id"]), int(node_config["num-partitions"])


def _setting(config: ConfigRecord, key: str, default: Any) -> Any:
    """A local-training setting: the server's value for this round if it sent one, else the run config."""
    value = config.get(key, default)
    return type(default)(value) if isinstance(default, (int, float)) and not isinstance(value, bool) else value


def _received(msg: Message, context: Context):
    run = FedConfig.from_run_config(context.run_config)
    partition_id, num_partitions = _node_partition(context)
    config = msg.content["config"]
    if "subnet" not in config:
        raise ValueError("the message's config has no 'subnet' (the SubNet to train, as JSON)")
    net = scratch_supernet(run.model, run.image_size, run.seed, channels_last=run.channels_last)
    subnet = net.space.validate(SubNetConfig.from_json(str(config["subnet"])))
    load_subnet_arrays(net, subnet, {k: a.numpy() for k, a in msg.content["arrays"].items()})
    if run.bn_mode == "frozen":
        set_identity_bn(net)
    return run, partition_id, num_partitions, config, net, subnet


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received SubNet locally and return its trained slices."""
    run, partition_id, num_partitions, config, net, subnet = _received(msg, context)
    data = load_data(run)
    local = client_dataset(data.train, partition_id, num_partitions, run.partitioner, run.dirichlet_alpha, run.seed)
    server_round = int(config.get("server-round", 0))
    seed = run.seed * 1_000_003 + server_round * 1009 + partition_id
    loader = make_loader(local, _setting(config, "batch-size", run.batch_size), shuffle=True, seed=seed)
    result = train_subnet(
        net, subnet, loader,
        epochs=_setting(config, "local-epochs", run.local_epochs),
        max_steps=_setting(config, "local-steps", run.local_steps),
        lr=_setting(config, "lr", run.lr),
        momentum=_setting(config, "momentum", run.momentum),
        weight_decay=_setting(config, "weight-decay", run.weight_decay),
        max_grad_norm=_setting(config, "max-grad-norm", run.max_grad_norm),
        frozen_bn=run.bn_mode == "frozen",
        seed=seed,
    )
    arrays = ArrayRecord({k: Array(v) for k, v in subnet_arrays(net, subnet).items()})
    metrics = MetricRecord({"train-loss": result.loss, "num-examples": len(local), "train-samples": result.samples})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Accuracy of the received SubNet on this node's part of the test split (BN recalibrated locally,
    unless ``bn-mode = "frozen"``)."""
    run, partition_id, num_partitions, config, net, subnet = _received(msg, context)
    data = load_data(run)
    local_train = client_dataset(data.train, partition_id, num_partitions, run.partitioner,
                                 run.dirichlet_alpha, run.seed)
    local_test = client_dataset(data.test, partition_id, num_partitions, "iid", seed=run.seed)
    batch_size = _setting(config, "batch-size", run.batch_size)
    result = evaluate_subnet(net, subnet, make_loader(local_test, batch_size, shuffle=False),
                             bn_loader=None if run.bn_mode == "frozen" else make_loader(local_train, batch_size,
                                                                                        shuffle=False),
                             bn_batches=run.bn_batches)
    metrics = MetricRecord({"eval-loss": result.loss, "eval-accuracy": result.accuracy,
                            "num-examples": result.num_examples})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)

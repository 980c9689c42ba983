"""SuperFedNAS on Flower's message API, with mock replies (no simulation): what is sent, how replies
are aggregated, and how failures, drop-outs and bad replies are handled."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from ws_fed.inprocess import InProcessGrid
from ws_fed.strategy import TRAIN_MAC_FACTOR, FedAvgSubNet, SuperFedNAS


def never_called(msg, context):  # replies are built by hand in these tests
    raise AssertionError("the ClientApp must not run in mock-reply tests")


@pytest.fixture(scope="module")
def net():
    """Module-scoped SuperNet: strategies never write into it, so its weights stay the same."""
    from ws_fed.task import build_supernet

    return build_supernet(seed=0)


@pytest.fixture
def grid():
    with InProcessGrid(never_called, num_nodes=3) as g:
        yield g


def make_strategy(net, **kwargs):
    kwargs = {"min_train_nodes": 3, "min_available_nodes": 3, "beta_decay_rounds": 10, **kwargs}
    return SuperFedNAS(net, **kwargs)


def configure(strategy, net, grid, server_round=1):
    arrays = ArrayRecord(net.state_dict())
    msgs = list(strategy.configure_train(server_round, arrays, ConfigRecord({"lr": 0.1}), grid))
    return {m.metadata.dst_node_id: m for m in msgs}, {k: v.numpy() for k, v in arrays.items()}


def reply(msg, value=None, *, arrays=None, num_examples=10, samples=32):
    """A client reply holding the received arrays with every float element set to ``value``."""
    if arrays is None:
        arrays = {k: (np.full_like(a.numpy(), value) if a.numpy().dtype.kind == "f" else a.numpy())
                  for k, a in msg.content["arrays"].items()}
    metrics = MetricRecord({"num-examples": num_examples, "train-samples": samples, "train-loss": 1.0})
    return Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                               "metrics": metrics}), reply_to=msg)


def roles(strategy, msgs):
    space = strategy.space
    out = {}
    for node, m in msgs.items():
        cfg = space.validate(json.loads(m.content["config"]["subnet"]))
        out["max" if cfg == space.max() else "min" if cfg == space.min() else "random"] = (node, cfg)
    return out


def test_each_node_gets_only_its_subnet_slices_and_config(net, grid):
    strategy = make_strategy(net)
    msgs, full = configure(strategy, net, grid)
    assert set(msgs) == set(grid.get_node_ids())
    r = roles(strategy, msgs)
    assert set(r) == {"max", "min", "random"}  # tracking sandwich with 3 clients
    full_bytes = sum(len(Array(v).data) for v in full.values())
    for node, cfg in r.values():
        m = msgs[node]
        slices = net.weight_slices(cfg)
        arrays = m.content["arrays"]
        assert set(arrays) == set(slices)
        for key, arr in arrays.items():
            np.testing.assert_array_equal(arr.numpy(), full[key][slices[key]])
        assert m.content["config"]["lr"] == 0.1 and m.content["config"]["server-round"] == 1
        assert m.metadata.message_type == "train"
    min_bytes = sum(len(a.data) for a in msgs[r["min"][0]].content["arrays"].values())
    assert min_bytes < 0.5 * full_bytes
    cost = strategy.costs[-1]
    assert cost.sent == 3
    assert cost.bytes_down == sum(len(a.data) for m in msgs.values() for a in m.content["arrays"].values())


def test_overlapping_aggregation_with_maxnet_weights(net, grid):
    strategy = make_strategy(net)
    msgs, old = configure(strategy, net, grid)
    r = roles(strategy, msgs)
    value = {"max": 1.0, "min": 2.0, "random": 3.0}
    replies = [reply(msgs[node], value[role], samples=32) for role, (node, _) in r.items()]
    arrays, metrics = strategy.aggregate_train(1, replies)
    new = {k: v.numpy() for k, v in arrays.items()}
    # round 1: beta = 0.9 -> weights max 0.9, min 0.05, random 0.05
    assert metrics["maxnet-beta"] == pytest.approx(0.9)
    assert new["stem.conv.conv.weight"] == pytest.approx(np.full_like(old["stem.conv.conv.weight"], 1.15))
    # depthwise kernels: the 7x7 corner is in the max net only (or also in the random one if it chose 7)
    rand_cfg = r["random"][1]
    key = "stages.0.blocks.0.conv_dw.weight"
    corner = new[key][0, 0, 0, 0]
    expected_corner = (0.9 * 1 + 0.05 * 3) / 0.95 if rand_cfg["kernel"][0] == 7 else 1.0
    assert corner == pytest.approx(expected_corner)
    centre = new[key][0, 0, 3, 3]  # every SubNet reads the centre of block 0 of stage 0
    assert centre == pytest.approx(1.15)
    # the last block of stage 0 runs only in the max net (and in the random one if its depth is 4)
    deep = new["stages.0.blocks.3.conv_pw.weight"].ravel()[0]
    assert deep == pytest.approx((0.9 + 0.15) / 0.95 if rand_cfg["depth"][0] == 4 else 1.0)
    # num_batches_tracked (int) keeps integer dtype
    assert new["stem.conv.bn.num_batches_tracked"].dtype == old["stem.conv.bn.num_batches_tracked"].dtype
    assert metrics["replies-accepted"] == 3 and metrics["train-loss"] == pytest.approx(1.0)
    cost = strategy.costs[-1]
    macs = sum(strategy.subnet_macs(cfg) for _, cfg in r.values())
    assert cost.client_macs == TRAIN_MAC_FACTOR * 32 * macs
    assert cost.bytes_up == cost.bytes_down


def test_elements_nobody_trained_keep_their_value(net, grid):
    strategy = make_strategy(net)
    msgs, old = configure(strategy, net, grid)
    r = roles(strategy, msgs)
    node, cfg = r["min"]
    arrays, _ = strategy.aggregate_train(1, [reply(msgs[node], 5.0)])  # only the min-net client replied
    new = {k: v.numpy() for k, v in arrays.items()}
    slices = net.weight_slices(cfg)
    for key, arr in new.items():
        mask = np.zeros(arr.shape, dtype=bool)
        if key in slices:
            mask[slices[key]] = True
        np.testing.assert_array_equal(arr[~mask], old[key][~mask])
        if arr.dtype.kind == "f" and key in slices:
            assert np.all(arr[mask] == 5.0)


def aggregate_without(strategy_factory, net, grid, drop_role, bad_reply_fn=None):
    """Aggregate the replies of all roles but ``drop_role``; optionally add a bad reply for it."""
    strategy = strategy_factory()
    msgs, _ = configure(strategy, net, grid)
    r = roles(strategy, msgs)
    replies = [reply(msgs[node], {"max": 1.0, "min": 2.0, "random": 3.0}[role])
               for role, (node, _) in r.items() if role != drop_role]
    if bad_reply_fn is not None:
        replies.append(bad_reply_fn(msgs[r[drop_role][0]]))
    arrays, metrics = strategy.aggregate_train(1, replies)
    return arrays, metrics, strategy


def drop_a_key(msg):
    arrays = {k: a.numpy() for k, a in msg.content["arrays"].items()}
    arrays.pop(next(iter(arrays)))
    return reply(msg, arrays=arrays)


def add_a_key(msg):
    arrays = {k: np.full_like(a.numpy(), 9.0) for k, a in msg.content["arrays"].items()}
    arrays["head.extra.weight"] = np.ones(3)
    return reply(msg, arrays=arrays)


def wrong_shape(msg):
    arrays = {k: a.numpy() for k, a in msg.content["arrays"].items()}
    arrays["stem.conv.conv.weight"] = np.ones((1, 1, 3, 3), dtype=np.float32)
    return reply(msg, arrays=arrays)


def non_finite(value):
    def make(msg):
        arrays = {k: np.full_like(a.numpy(), 1.5) for k, a in msg.content["arrays"].items()}
        arrays["stem.conv.conv.weight"][0, 0, 0, 0] = value
        return reply(msg, arrays=arrays)
    return make


def error_reply(msg):
    return Message(Error(code=2, reason="ClientApp raised: out of memory"), reply_to=msg)


@pytest.fixture(scope="module")
def clean(net):
    """The aggregate of the max- and min-net replies alone (the random-SubNet client absent)."""
    with InProcessGrid(never_called, num_nodes=3) as g:
        arrays, _, _ = aggregate_without(lambda: make_strategy(net), net, g, "random")
    return arrays


@pytest.mark.parametrize("bad, counter", [
    (None, "nodes-dropped"),
    (error_reply, "replies-failed"),
    (drop_a_key, "replies-rejected"),
    (add_a_key, "replies-rejected"),
    (wrong_shape, "replies-rejected"),
    (non_finite(np.nan), "replies-rejected"),
    (non_finite(np.inf), "replies-rejected"),
])
def test_one_bad_client_never_reaches_the_global_model(net, grid, clean, bad, counter, caplog):
    dirty, metrics, _ = aggregate_without(lambda: make_strategy(net), net, grid, "random", bad)
    assert metrics[counter] == 1 and metrics["replies-accepted"] == 2
    for key in clean:
        np.testing.assert_array_equal(dirty[key].numpy(), clean[key].numpy())
    # max (1.0, weight 0.9) and min (2.0, weight 0.1) replies only: stem weight = 1.1 exactly
    assert dirty["stem.conv.conv.weight"].numpy() == pytest.approx(np.full((8, 1, 3, 3), 1.1))
    if bad is not None:
        assert any(word in caplog.text for word in ("rejected", "failed"))


def test_too_few_replies_leave_the_global_model_unchanged(net, grid, caplog):
    strategy = make_strategy(net, min_train_replies=3)
    msgs, _ = configure(strategy, net, grid)
    r = roles(strategy, msgs)
    replies = [reply(msgs[r["max"][0]], 1.0), error_reply(msgs[r["min"][0]])]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is None
    assert metrics["replies-accepted"] == 1 and metrics["replies-failed"] == 1 and metrics["nodes-dropped"] == 1
    assert "global model unchanged" in caplog.text
    assert strategy.costs[-1].aggregated is False


def test_unexpected_and_duplicate_replies_are_rejected(net, grid):
    strategy = make_strategy(net)
    msgs, _ = configure(strategy, net, grid)
    r = roles(strategy, msgs)
    first = reply(msgs[r["max"][0]], 1.0)
    duplicate = reply(msgs[r["max"][0]], 100.0)
    stranger = reply(msgs[r["min"][0]], 100.0)
    stranger.metadata.__dict__["_src_node_id"] = 424242
    arrays, metrics = strategy.aggregate_train(1, [first, duplicate, stranger])
    assert metrics["replies-rejected"] == 2 and metrics["replies-accepted"] == 1
    assert np.all(arrays["stem.conv.conv.weight"].numpy() == 1.0)


def test_sample_weighting_needs_num_examples(net, grid):
    strategy = make_strategy(net, weight_by_num_examples=True)
    msgs, _ = configure(strategy, net, grid)
    r = roles(strategy, msgs)
    good_max = reply(msgs[r["max"][0]], 1.0, num_examples=30)
    good_min = reply(msgs[r["min"][0]], 2.0, num_examples=10)
    no_count = reply(msgs[r["random"][0]], 3.0, num_examples=0)
    arrays, metrics = strategy.aggregate_train(1, [good_max, good_min, no_count])
    assert metrics["replies-rejected"] == 1
    # weights: max 0.9 * 30/40, min 0.1 * 10/40 -> (0.675 * 1 + 0.025 * 2) / 0.7
    assert arrays["stem.conv.conv.weight"].numpy()[0, 0, 0, 0] == pytest.approx((0.675 + 0.05) / 0.7)


def test_beta_decays_over_rounds(net, grid):
    strategy = make_strategy(net, beta_decay_rounds=2, beta_initial=0.9)
    betas = []
    for rnd in range(1, 4):
        msgs, _ = configure(strategy, net, grid, server_round=rnd)
        _, metrics = strategy.aggregate_train(rnd, [reply(m, 1.0) for m in msgs.values()])
        betas.append(metrics["maxnet-beta"])
    # T = 2, beta_final = 1/K = 1/3: 0.9, then the cosine midpoint, then 1/3 from round 3 on
    assert betas == pytest.approx([0.9, (0.9 + 1 / 3) / 2, 1 / 3])


def test_lr_schedule_sends_each_round_its_annealed_lr(net, grid):
    strategy = make_strategy(net, lr_schedule="cosine", lr_final=0.01)
    strategy.num_rounds = 4  # as start() sets it
    sent = []
    for rnd in range(1, 5):
        msgs, _ = configure(strategy, net, grid, server_round=rnd)  # the train config says lr = 0.1
        lrs = {m.content["config"]["lr"] for m in msgs.values()}
        assert len(lrs) == 1  # every client of a round gets the same lr
        sent.append(lrs.pop())
    # cosine over T = 4 rounds: 0.01 + 0.09 * (1 + cos(pi * t / 4)) / 2 for t = 0..3
    assert sent == pytest.approx([0.1, 0.01 + 0.045 * (1 + 2 ** -0.5), 0.055, 0.01 + 0.045 * (1 - 2 ** -0.5)])
    constant = make_strategy(net)
    constant.num_rounds = 4
    msgs, _ = configure(constant, net, grid, server_round=3)
    assert {m.content["config"]["lr"] for m in msgs.values()} == {0.1}  # the default sends lr unchanged


def test_sampling_is_seeded_and_respects_fraction(net):
    with InProcessGrid(never_called, num_nodes=10) as g:
        picks = []
        for seed in (0, 0, 1):
            s = SuperFedNAS(net, fraction_train=0.4, min_train_nodes=2, seed=seed, beta_decay_rounds=5)
            msgs = s.configure_train(1, ArrayRecord(net.state_dict()), ConfigRecord(), g)
            picks.append(sorted(m.metadata.dst_node_id for m in msgs))
    assert len(picks[0]) == 4 and picks[0] == picks[1] and picks[0] != picks[2]


def test_fedavg_baseline_averages_one_fixed_subnet_by_examples(net, grid):
    cfg = net.space.sample(torch.Generator().manual_seed(5))
    strategy = FedAvgSubNet(net, cfg, min_train_nodes=3, min_available_nodes=3)
    msgs, old = configure(strategy, net, grid)
    for m in msgs.values():
        assert m.content["config"]["subnet"] == cfg.to_json()
    nodes = sorted(msgs)
    replies = [reply(msgs[nodes[0]], 1.0, num_examples=10), reply(msgs[nodes[1]], 4.0, num_examples=30),
               reply(msgs[nodes[2]], 7.0, num_examples=60)]
    arrays, _ = strategy.aggregate_train(1, replies)
    slices = net.weight_slices(cfg)
    expected = (10 * 1.0 + 30 * 4.0 + 60 * 7.0) / 100  # 5.5
    for key, arr in ((k, a.numpy()) for k, a in arrays.items()):
        mask = np.zeros(arr.shape, dtype=bool)
        if key in slices:
            mask[slices[key]] = True
        np.testing.assert_array_equal(arr[~mask], old[key][~mask])
        if key in slices and arr.dtype.kind == "f":
            np.testing.assert_allclose(arr[mask], expected, rtol=1e-6)


def test_strategy_rejects_bad_arguments(net):
    with pytest.raises(ValueError, match="min_train_replies must be an int >= 1, got 0"):
        SuperFedNAS(net, min_train_replies=0)
    with pytest.raises(ValueError, match=r"fraction_train must be in \(0, 1\], got 0"):
        SuperFedNAS(net, fraction_train=0)
    with pytest.raises(ValueError, match=r"beta_initial must be in \(0, 1\]"):
        SuperFedNAS(net, beta_initial=1.5)
    with pytest.raises(ValueError, match="lr_schedule must be 'cosine', 'linear' or 'constant', got 'step'"):
        SuperFedNAS(net, lr_schedule="step")
    with pytest.raises(ValueError, match=r"lr_final must be a number >= 0, got -0\.1"):
        SuperFedNAS(net, lr_final=-0.1)
    with pytest.raises(TypeError, match=r"ws_core\.SuperNet"):
        SuperFedNAS(torch.nn.Linear(2, 2))


def test_start_checks_the_initial_arrays(net, grid):
    bad = ArrayRecord({"w": Array(np.zeros(3))})
    with pytest.raises(ValueError, match="do not fit the SuperNet"):
        make_strategy(net).start(grid, bad, num_rounds=1)


@pytest.mark.parametrize("by_examples", [False, True])
def test_summary_says_what_num_examples_weights(net, caplog, by_examples):
    SuperFedNAS(net, weight_by_num_examples=by_examples, min_train_nodes=2).summary()
    lines = [r.getMessage() for r in caplog.records]
    (weighted_by,) = [ln for ln in lines if "Weighted by:" in ln]
    (model,) = [ln for ln in lines if "Model aggregation weights:" in ln]
    if by_examples:
        assert weighted_by.endswith("'num-examples' (client metrics and model aggregation)")
        assert "× each client's 'num-examples'" in model
    else:
        assert weighted_by.endswith("'num-examples' (client metrics only; the model is not weighted by examples)")
        assert "not weighted by examples" in model

from __future__ import annotations

import itertools

import pytest
import timm
import torch

from ws_core.latency import BlockLatencyTable, device_key, subnet_blocks


@pytest.fixture(scope="module")
def net():
    return timm.create_model("ws_ofa_mbv3_035_32", num_classes=10).eval()


def _ticks(step_s: float = 1e-3):
    """A fake clock: every reading is ``step_s`` after the previous, so every timed run takes exactly
    ``step_s`` (one reading before and one after)."""
    counter = itertools.count()
    return lambda: next(counter) * step_s


def test_blocks_follow_the_subnet(net):
    lo, hi = net.space.min(), net.space.max()
    small, large = subnet_blocks(net, lo), subnet_blocks(net, hi)
    assert len(small) < len(large)  # elastic depth: fewer blocks
    assert [b.kind for b in small][:1] == [b.kind for b in large][:1]
    assert small[0].input_shape == (3, 32, 32)  # the stem sees the image
    assert small[0].key == large[0].key  # the same stem at the same resolution: one table entry
    assert len({b.key for b in large}) <= len(large)


def test_measure_times_each_missing_block_once_and_predict_sums_them(net):
    table = BlockLatencyTable(device_key("cpu"))
    lo, hi = net.space.min(), net.space.max()
    added = table.measure(net, [lo], batch_sizes=(1, 2), warmup=1, repeats=3, rounds=2, timer=_ticks())
    keys_lo = {b.key for b in subnet_blocks(net, lo)}
    assert added == 2 * len(keys_lo) and len(table) == len(keys_lo)
    # every run took exactly 1 ms on the fake clock: the prediction counts the blocks
    assert table.predict(net, lo, 1) == pytest.approx(len(subnet_blocks(net, lo)) * 1.0)
    with pytest.raises(KeyError, match=r"block\(s\) of this SubNet were never measured at batch 1"):
        table.predict(net, hi, 1)
    keys_hi = {b.key for b in subnet_blocks(net, hi)}
    assert table.measure(net, [hi, lo], batch_sizes=(1,), warmup=0, repeats=1, rounds=1,
                         timer=_ticks()) == len(keys_hi - keys_lo)  # only what was missing
    assert table.predict(net, hi, 1) == pytest.approx(len(subnet_blocks(net, hi)) * 1.0)
    with pytest.raises(ValueError, match="repeats >= 1"):
        table.measure(net, [lo], repeats=0)


def test_tables_of_several_devices_share_one_file(net, tmp_path):
    path = tmp_path / "latency.json"
    a = BlockLatencyTable("cpu:test-a")
    a.measure(net, [net.space.min()], warmup=0, repeats=1, rounds=1, timer=_ticks())
    b = BlockLatencyTable("cpu:test-b")
    b.measure(net, [net.space.min()], warmup=0, repeats=1, rounds=1, timer=_ticks(2e-3))
    a.save(path)
    b.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["latency.json"]  # atomic: no temporaries left
    again = BlockLatencyTable.load(path, "cpu:test-a")
    assert again.entries == a.entries and again.kinds == a.kinds
    assert BlockLatencyTable.load(path, "cpu:test-b").predict(net, net.space.min()) == pytest.approx(
        2 * a.predict(net, net.space.min()))
    assert len(BlockLatencyTable.load(path, "cuda:none")) == 0
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a latency-table file"):
        BlockLatencyTable.load(path, "cpu:test-a")


def test_a_search_uses_the_table_for_subnets_nobody_profiled(net):
    from ws_core.cost import CostModel
    from ws_core.search import evolutionary_search

    table = BlockLatencyTable(device_key("cpu"))
    cost = table.as_cost(net, warmup=0, repeats=1, rounds=1, timer=_ticks())
    macs = CostModel(net).macs
    limit = cost(net.space.min()) + 3.0  # on the fake clock: at most 3 blocks more than the min SubNet
    result = evolutionary_search(net.space, lambda c: float(macs(c)), cost, limit, population_size=4,
                                 generations=2, generator=torch.Generator().manual_seed(0))
    assert cost(result.best) <= limit and result.best_cost <= limit
    assert len(table) > len({b.key for b in subnet_blocks(net, net.space.min())})  # it measured as it went

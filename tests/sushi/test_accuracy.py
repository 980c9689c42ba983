"""Accuracy tables (measured / predictor / proxy) and the uniform candidate SubNets."""

from __future__ import annotations

import math

import pytest
import torch

from ws_core import CostModel
from ws_core.search import AccuracyPredictor
from ws_sushi.accuracy import AccuracyTable, uniform_subnets


def test_table_lookup_and_round_trip(tmp_path, tiny_mbv3):
    net = tiny_mbv3
    table = AccuracyTable([net.space.min(), net.space.max()], [0.61, 0.68], metric="top1", source="measured")
    assert table.accuracy(net.space.max()) == 0.68 and table[net.space.min().id] == 0.61
    table.save(tmp_path / "acc.json")
    back = AccuracyTable.load(tmp_path / "acc.json")
    assert dict(back) == dict(table) and back.source == "measured" and back.configs == table.configs
    with pytest.raises(KeyError, match="no accuracy for SubNet"):
        table.accuracy(net.space.sample(torch.Generator().manual_seed(3)))


def test_table_validation():
    with pytest.raises(ValueError, match="2 configs but 1 accuracies"):
        AccuracyTable([{"depth": [2]}, {"depth": [3]}], [0.5])
    with pytest.raises(ValueError, match="listed twice"):
        AccuracyTable([{"depth": [2]}, {"depth": [2]}], [0.5, 0.6])
    with pytest.raises(ValueError, match="finite"):
        AccuracyTable([{"depth": [2]}], [math.nan])
    with pytest.raises(ValueError, match=r"source must be one of \['measured', 'predictor', 'proxy'\]"):
        AccuracyTable([{"depth": [2]}], [0.5], source="guess")
    with pytest.raises(ValueError, match="'entries' list"):
        AccuracyTable.from_dict({"rows": []})


def test_bind_canonicalises(tiny_mbv3):
    net = tiny_mbv3
    raw = net.space.min().to_dict()
    raw["kernel"] = [3 if k is None else k for k in raw["kernel"]]  # values in skipped blocks: not canonical
    table = AccuracyTable([raw], [0.6]).bind(net)
    assert table.accuracy(net.space.min()) == 0.6


def test_log_macs_proxy_endpoints(tiny_mbv3):
    net = tiny_mbv3
    configs = uniform_subnets(net.space)
    table = AccuracyTable.log_macs_proxy(net, configs, 0.70, 0.77)
    assert table.source == "proxy"
    assert table.accuracy(net.space.min()) == pytest.approx(0.70)
    assert table.accuracy(net.space.max()) == pytest.approx(0.77)
    macs = CostModel(net)
    ordered = sorted(configs, key=macs.macs)
    accs = [table.accuracy(c) for c in ordered]
    assert accs == sorted(accs)  # monotone in MACs
    with pytest.raises(ValueError, match="low <= high"):
        AccuracyTable.log_macs_proxy(net, configs, 0.8, 0.7)


def test_from_predictor(tiny_mbv3):
    net = tiny_mbv3
    torch.manual_seed(0)
    predictor = AccuracyPredictor(net.space, hidden_size=8, n_layers=1, base_acc=0.7)
    configs = [net.space.min(), net.space.max()]
    table = AccuracyTable.from_predictor(predictor, configs)
    assert table.source == "predictor"
    assert [table.accuracy(c) for c in configs] == pytest.approx(predictor.predict(configs).tolist())


def test_uniform_subnets(tiny_mbv3):
    space = tiny_mbv3.space
    subnets = uniform_subnets(space)
    assert len(subnets) == 27 and len(set(subnets)) == 27
    assert space.min() in subnets and space.max() in subnets
    assert all(len({k for k in c["kernel"] if k is not None}) == 1 for c in subnets)
    with pytest.raises(ValueError, match=r"unknown dimensions \['width'\]"):
        uniform_subnets(space, fixed={"width": 1.0})
    assert len(uniform_subnets(space, fixed={"kernel": 5})) == 9

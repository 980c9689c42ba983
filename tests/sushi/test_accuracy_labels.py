"""Proxy accuracies are labelled "proxy (log-linear in MACs)" wherever ws-sushi prints or reports them."""

from __future__ import annotations

import json

import pytest

from ws_sushi.accuracy import PROXY_LABEL, AccuracyTable, uniform_subnets
from ws_sushi.cli import main
from ws_sushi.sched import NoCache, SubGraphStationary
from ws_sushi.simulate import build_system, compare_policies, format_summary
from ws_sushi.stream import QueryStream

STREAM = QueryStream.from_queries([0.0, 0.01, 0.02, 0.5], [0.2, 0.03, 0.2, 0.2])


def test_tables_carry_their_label(tiny_mbv3):
    net = tiny_mbv3
    proxy = AccuracyTable.log_macs_proxy(net, uniform_subnets(net.space), 0.70, 0.77)
    assert PROXY_LABEL == "proxy (log-linear in MACs)"
    assert proxy.label == PROXY_LABEL and PROXY_LABEL in proxy.metric
    assert proxy.to_dict()["label"] == PROXY_LABEL
    assert AccuracyTable.from_dict(json.loads(json.dumps(proxy.to_dict()))).label == PROXY_LABEL
    # the numbers themselves are unchanged: 0.70 at the fewest MACs, 0.77 at the most
    assert min(proxy.values()) == pytest.approx(0.70) and max(proxy.values()) == pytest.approx(0.77)
    measured = AccuracyTable([net.space.min(), net.space.max()], [0.61, 0.68], source="measured")
    assert measured.label == "measured" and measured.to_dict()["label"] == "measured"
    assert AccuracyTable([net.space.max()], [0.7], source="predictor").label == "predicted"


@pytest.mark.parametrize(("proxy", "label"), [(True, PROXY_LABEL), (False, "measured")])
def test_summaries_and_printed_tables_say_what_the_accuracy_is(tiny_mbv3, proxy, label):
    net = tiny_mbv3
    if proxy:
        table = AccuracyTable.log_macs_proxy(net, [net.space.min(), net.space.max()], 0.70, 0.77)
    else:
        table = AccuracyTable([net.space.min(), net.space.max()], [0.70, 0.77], source="measured")
    system = build_system(net, table, "mcu_m7", bits=4)
    results = compare_policies(STREAM, system, [NoCache(), SubGraphStationary(window=4, period=2)])
    for r in results.values():
        assert r.summary()["accuracy_label"] == label
        assert 0.70 <= r.summary()["served_accuracy"] <= 0.77  # numbers as before, only labelled
    text = format_summary(results)
    header, last = text.splitlines()[0], text.splitlines()[-1]
    if proxy:
        assert "proxy acc" in header and last == f"proxy acc: {PROXY_LABEL}"
    else:
        assert "proxy" not in text and last == "accuracy: measured"


def test_cli_simulate_labels_proxy_accuracy(tmp_path, capsys):
    (tmp_path / "trace.csv").write_text("arrival_s,slo_ms\n0.0,200\n0.05,30\n0.5,200\n")
    out = tmp_path / "summary.json"
    assert main(["simulate", "--model", "ws_ofa_mbv3_035_32", "--hardware", "mcu_m7", "--bits", "4",
                 "--trace", str(tmp_path / "trace.csv"), "--policies", "no-cache", "--json", str(out)]) == 0
    assert f"proxy acc: {PROXY_LABEL}" in capsys.readouterr().out
    assert json.loads(out.read_text())["policies"]["no-cache"]["accuracy_label"] == PROXY_LABEL

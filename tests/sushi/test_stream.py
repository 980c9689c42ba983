"""Query streams: generation, phases, trace files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ws_sushi.stream import Phase, QueryStream, generate_stream, load_phases, read_trace, reference_phases, write_trace


def test_generate_stream_follows_the_phases():
    phases = [Phase(10.0, 100, 3.0), Phase(10.0, 400, (1.0, 2.0), accuracy_target=0.75)]
    s = generate_stream(phases, seed=1)
    first = s.arrival_s < 10.0
    n1, n2 = int(first.sum()), int((~first).sum())
    assert abs(n1 - 1000) < 4 * math.sqrt(1000) and abs(n2 - 4000) < 4 * math.sqrt(4000)  # Poisson counts
    assert np.all(s.latency_target_s[first] == 3e-3)
    assert s.latency_target_s[~first].min() >= 1e-3 and s.latency_target_s[~first].max() <= 2e-3
    assert np.isnan(s.accuracy_target[first]).all() and np.all(s.accuracy_target[~first] == 0.75)
    assert np.all(np.diff(s.arrival_s) >= 0)
    again = generate_stream(phases, seed=1)
    assert np.array_equal(again.arrival_s, s.arrival_s)
    assert not np.array_equal(generate_stream(phases, seed=2).arrival_s[:10], s.arrival_s[:10])


def test_bursty_phase_has_more_variable_gaps():
    calm = generate_stream([Phase(50.0, 100, 3.0, cv2=1.0)], seed=0)
    bursty = generate_stream([Phase(50.0, 100, 3.0, cv2=8.0)], seed=0)
    cv2 = lambda s: np.var(np.diff(s.arrival_s)) / np.mean(np.diff(s.arrival_s)) ** 2  # noqa: E731
    assert cv2(calm) == pytest.approx(1.0, abs=0.2)
    assert cv2(bursty) > 4.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"duration_s": 0, "rate_qps": 1, "latency_target_ms": 1}, "duration_s must be a finite number > 0"),
    ({"duration_s": 1, "rate_qps": 1, "latency_target_ms": (3, 2)}, "0 < low <= high"),
    ({"duration_s": 1, "rate_qps": -5, "latency_target_ms": 1}, "rate_qps must be a finite number > 0"),
])
def test_phase_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Phase(**kwargs)


def test_trace_round_trip(tmp_path):
    s = QueryStream.from_queries([0.0, 0.5, 0.2], [3e-3, 2e-3, 4e-3], [None, 0.75, None])
    assert s.arrival_s.tolist() == [0.0, 0.2, 0.5]  # sorted by arrival
    for name in ("t.csv", "t.json"):
        write_trace(s, tmp_path / name)
        back = read_trace(tmp_path / name)
        assert np.allclose(back.arrival_s, s.arrival_s) and np.allclose(back.latency_target_s, s.latency_target_s)
        assert np.array_equal(np.isnan(back.accuracy_target), np.isnan(s.accuracy_target))
    assert not list(tmp_path.glob("*.tmp"))


def test_trace_aliases_and_errors(tmp_path):
    p = tmp_path / "serve.csv"
    p.write_text("timestamp_s,slo_ms\n0.1,36\n0.3,36\n")
    s = read_trace(p)
    assert s.arrival_s.tolist() == [0.1, 0.3] and np.allclose(s.latency_target_s, 0.036)
    j = tmp_path / "q.json"
    j.write_text(json.dumps([{"t": 0, "latency_target_s": 0.01, "min_accuracy": 0.7}]))
    assert read_trace(j).accuracy_target.tolist() == [0.7]
    bad = tmp_path / "bad.csv"
    bad.write_text("when,budget\n0,1\n")
    with pytest.raises(ValueError, match=r"needs an arrival time .* got columns \['budget', 'when'\]"):
        read_trace(bad)
    bad.write_text("arrival_s,slo_ms\n0,fast\n")
    with pytest.raises(ValueError, match="non-numeric"):
        read_trace(bad)
    bad.write_text("arrival_s,slo_ms\n0,-1\n")
    with pytest.raises(ValueError, match="latency targets must be finite and > 0"):
        read_trace(bad)
    with pytest.raises(ValueError, match="does not exist"):
        read_trace(tmp_path / "missing.csv")


def test_reference_phases_by_hand():
    lat = reference_phases((2.0, 6.0), load=0.3)
    assert [p.latency_target_ms for p in lat] == [pytest.approx(2.6), 4.0, pytest.approx(6.6), (2.4, 4.0),
                                                  pytest.approx(3.2)]
    assert lat[0].rate_qps == pytest.approx(50.0) and lat[3].rate_qps == pytest.approx(100.0)
    acc = reference_phases((2.0, 6.0), accuracy_range=(0.70, 0.80), cycles=2)
    assert len(acc) == 10
    assert [p.accuracy_target for p in acc[:5]] == pytest.approx([0.73, 0.78, 0.76, 0.71, 0.79])
    assert all(p.latency_target_ms == pytest.approx(7.2) for p in acc)


def test_load_phases(tmp_path):
    p = tmp_path / "phases.json"
    p.write_text(json.dumps({"seed": 3, "phases": [{"duration_s": 1, "rate_qps": 10, "latency_target_ms": [1, 2]}]}))
    phases, seed = load_phases(p)
    assert seed == 3 and phases[0].latency_target_ms == (1.0, 2.0)
    p.write_text(json.dumps({"phases": [{"duration_s": 1, "rate": 10}]}))
    with pytest.raises(ValueError, match="phase 0"):
        load_phases(p)

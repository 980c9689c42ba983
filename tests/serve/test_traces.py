from __future__ import annotations

import numpy as np
import pytest

from ws_serve.traces import (
    Trace,
    bursty_trace,
    gamma_arrivals,
    maf_trace,
    rate_trace,
    read_maf_invocations,
    synthetic_maf_invocations,
    time_varying_trace,
    write_maf_invocations,
)


@pytest.mark.parametrize("cv2", [0.0, 1.0, 2.0, 4.0, 8.0])
def test_gamma_arrivals_rate_and_cv2(cv2):
    a = gamma_arrivals(1000.0, cv2, 60.0, seed=0)
    gaps = np.diff(a)
    assert len(a) == pytest.approx(60_000, rel=0.05)
    assert gaps.var() / gaps.mean() ** 2 == pytest.approx(cv2, abs=max(0.05, 0.1 * cv2))
    assert a[0] >= 0 and a[-1] < 60.0


def test_bursty_trace_is_base_plus_gamma_stream():
    t = bursty_trace(base_rate=1500, variant_rate=5550, cv2=4, duration_s=20, seed=1)
    assert t.mean_rate == pytest.approx(7050, rel=0.03)
    assert np.all(np.diff(t.arrivals) >= 0)
    assert t.meta["cv2"] == 4 and t.duration == 20
    # burstier streams vary more from second to second
    calm = bursty_trace(1500, 5550, 2, 20, seed=1).rates(0.1).std()
    wild = bursty_trace(1500, 5550, 8, 20, seed=1).rates(0.1).std()
    assert wild > calm
    assert np.array_equal(bursty_trace(10, 20, 2, 5, seed=3).arrivals, bursty_trace(10, 20, 2, 5, seed=3).arrivals)


def test_rate_trace_follows_piecewise_rates_with_gaps():
    t = rate_trace([0, 10, 20, 30], [100, 0, 300], cv2=1.0, seed=0)
    counts = np.histogram(t.arrivals, bins=[0, 10, 20, 30])[0]
    assert counts[1] == 0
    assert counts[0] == pytest.approx(1000, rel=0.1) and counts[2] == pytest.approx(3000, rel=0.06)
    periodic = rate_trace([0, 1, 2], [10, 20], cv2=0.0)
    assert np.allclose(periodic.arrivals, np.r_[np.arange(1, 10) / 10, 1 + np.arange(0, 20) / 20])
    with pytest.raises(ValueError, match="len"):
        rate_trace([0, 1], [1, 2])
    with pytest.raises(ValueError, match="increase"):
        rate_trace([0, 0, 1], [1, 2])


def test_time_varying_trace_ramps_at_the_acceleration():
    t = time_varying_trace(2500, 4500, acceleration=500, duration_s=12, cv2=2, ramp_start_s=2, seed=0)
    rates = t.rates(1.0)
    assert rates[:2].mean() == pytest.approx(2500, rel=0.1)   # before the ramp
    assert rates[7:].mean() == pytest.approx(4500, rel=0.08)  # ramp ends at 2 + 2000/500 = 6 s
    assert rates[4] == pytest.approx(2500 + 500 * 2.5, rel=0.15)  # mid-ramp (t = 4.5 s)


def _maf_counts():
    counts = np.zeros((3, 6), dtype=np.int64)
    counts[0] = [1, 2, 3, 4, 5, 6]
    counts[1] = [10, 0, 0, 0, 0, 10]
    counts[2] = [5, 5, 5, 5, 5, 5]
    return counts


def test_maf_loader_reads_the_public_format(tmp_path):
    path = write_maf_invocations(tmp_path / "invocations_per_function_md.anon.d01.csv", _maf_counts(),
                                 triggers=["http", "timer", "http"])
    header = path.read_text().splitlines()[0].split(",")
    assert header[:5] == ["HashOwner", "HashApp", "HashFunction", "Trigger", "1"]
    assert read_maf_invocations(path).tolist() == [16, 7, 8, 9, 10, 21]
    assert read_maf_invocations(path, triggers=["HTTP"]).tolist() == [6, 7, 8, 9, 10, 11]
    two_days = read_maf_invocations([path, path])
    assert len(two_days) == 12


def test_maf_loader_rejects_other_files(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="not an Azure Functions invocation file"):
        read_maf_invocations(bad)
    ragged = write_maf_invocations(tmp_path / "r.csv", _maf_counts())
    ragged.write_text(ragged.read_text() + "o,a,f,http,1,2\n")
    with pytest.raises(ValueError, match="columns"):
        read_maf_invocations(ragged)


def test_maf_trace_compresses_and_keeps_the_shape():
    per_minute = np.array([100, 300, 0, 200])
    t = maf_trace(per_minute, duration_s=8.0, mean_rate=1000.0, seed=0)
    assert t.duration == 8.0 and t.mean_rate == pytest.approx(1000, rel=0.05)
    counts = np.histogram(t.arrivals, bins=[0, 2, 4, 6, 8])[0]
    # each minute becomes a 2 s window; rate proportional to the minute's invocations, mean 1000 q/s
    assert counts[2] == 0
    assert counts / counts.sum() == pytest.approx([1 / 6, 3 / 6, 0, 2 / 6], abs=0.02)
    with pytest.raises(ValueError, match="not all zero"):
        maf_trace([0, 0])


def test_synthetic_maf_is_in_the_public_format(tmp_path):
    counts = synthetic_maf_invocations(num_functions=20, minutes=120, seed=0)
    assert counts.shape == (20, 120) and counts.min() >= 0
    path = write_maf_invocations(tmp_path / "d01.csv", counts)
    assert read_maf_invocations(path).tolist() == counts.sum(axis=0).tolist()


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_trace_files_round_trip(tmp_path, suffix):
    t = bursty_trace(50, 100, 4, 3, seed=0)
    path = t.save(tmp_path / f"t{suffix}")
    back = Trace.load(path)
    np.testing.assert_allclose(back.arrivals, t.arrivals, atol=1e-9)
    if suffix == ".json":
        assert back.meta == t.meta and back.name == t.name
    assert not list(tmp_path.glob(".*tmp"))


def test_trace_validation(tmp_path):
    with pytest.raises(ValueError, match="sorted"):
        Trace(np.array([1.0, 0.5]))
    with pytest.raises(ValueError, match=r"\.csv or \.json"):
        Trace(np.array([0.1])).save(tmp_path / "t.txt")
    (tmp_path / "bad.csv").write_text("arrival_s\nabc\n")
    with pytest.raises(ValueError, match="numbers"):
        Trace.load(tmp_path / "bad.csv")
    (tmp_path / "plain.csv").write_text("0.5\n1.5\n")
    assert Trace.load(tmp_path / "plain.csv").arrivals.tolist() == [0.5, 1.5]
    with pytest.raises(ValueError, match="rate must be"):
        gamma_arrivals(0, 1, 1)
    head = bursty_trace(100, 0, 0, 10).head(2.0)
    assert head.duration == 2.0 and len(head) == 199

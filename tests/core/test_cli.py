"""``ws-core`` / ``python -m ws_core``: the parser, the tour, and the tour's check of its own timings.

Timings come from a fake clock (``profile_latency(timer=...)``): no test depends on how fast this machine is.
"""

from __future__ import annotations

import runpy
import sys

import pytest
import torch

from ws_core import CostModel, SuperNet, cli
from ws_core.cli import build_parser, latency_warnings, main


class FakeClock:
    """A clock that advances by ``ms(i, MMACs, round)`` milliseconds per call while SubNet ``i`` is active.

    ``profile_latency`` reads the clock before and after each forward, so each timed forward of a SubNet takes
    exactly the scripted time. The round is how many times that SubNet was activated before (each round
    sweeps every SubNet once)."""

    def __init__(self, net: SuperNet, configs, ms) -> None:
        costs = CostModel(net)
        self.net, self.ms = net, ms
        self.index = {c.id: (i, costs.macs(c) / 1e6) for i, c in enumerate(configs)}
        self.t, self.last, self.entered = 0.0, None, {}

    def __call__(self) -> float:
        cfg = self.net.active
        if cfg.id != self.last:
            self.entered[cfg.id] = self.entered.get(cfg.id, 0) + 1
            self.last = cfg.id
        self.t += self.ms(*self.index[cfg.id], self.entered[cfg.id] - 1) / 1e3
        return self.t


def _tour(capsys, ms) -> tuple[list[float], list[float], str, str]:
    """Run the tour's report on a fake clock; return MMACs, the latency column, stdout and stderr."""
    args = build_parser().parse_args(["tour", "--subnets", "3", "--warmup", "0", "--repeats", "2", "--rounds", "2"])
    net, configs = cli._sample(args)
    assert len({c.id for c in configs}) == len(configs)
    assert cli._report(net, configs, args, timer=FakeClock(net, configs, ms)) == 0
    out, err = capsys.readouterr()
    rows = [line for line in out.splitlines() if any(line[2:].startswith(c.id) for c in configs)]
    costs = CostModel(net)
    return [costs.macs(c) / 1e6 for c in configs], [float(r.split()[-1]) for r in rows], out, err


def test_latency_warnings_hand_computed():
    macs = [1e6, 2e6, 4e6]
    assert latency_warnings(macs, [[1.0, 2.0, 4.0], [1.5, 2.2, 3.9]]) == []
    assert latency_warnings(macs, [[1.0, 2.0, 4.0]]) == []  # one round: nothing to compare
    # SubNet 1: 2.0 then 5.0 ms (2.5x); SubNet 2: 4.0 then 9.0 ms (2.25x)
    (rounds,) = latency_warnings(macs, [[1.0, 2.0, 4.0], [1.1, 5.0, 9.0]])
    assert rounds.startswith("rounds disagree by up to 2.5× (SubNet 1, 2.00, 5.00 ms); 2 of 3 SubNets")
    assert latency_warnings(macs, [[1.0, 2.0, 4.0], [2.0, 4.0, 8.0]]) == []  # exactly 2x is tolerated
    # fewest MACs, slowest: 7 ms > 2 x 3 ms of SubNet 1 and > 2 x 3.2 ms of SubNet 2; the worst is named
    (order,) = latency_warnings(macs, [[7.0, 3.0, 3.2]])
    assert order == ("latency is not monotone in MACs: SubNet 0 (1.0 MMACs) took 7.00 ms, more than 2× the 3.00 ms "
                     "of SubNet 1 (2.0 MMACs)")
    assert latency_warnings(macs, [[3.0, 2.0, 1.6]]) == []  # not monotone, but within 2x: noise, not load
    assert len(latency_warnings(macs, [[1.0, 20.0, 4.0], [30.0, 21.0, 4.1]])) == 2
    with pytest.raises(ValueError, match="one per SubNet"):
        latency_warnings(macs, [[1.0, 2.0]])
    with pytest.raises(ValueError, match="factor must be > 1"):
        latency_warnings(macs, [[1.0, 2.0, 3.0]], factor=1.0)


def test_tour_latency_is_min_over_rounds_and_steady_timings_do_not_warn(capsys):
    # 0.1 ms per MMAC in round 0, 1.5x that in round 1: the latency column is round 0's
    mmacs, latency, out, err = _tour(capsys, lambda i, mmacs, r: 0.1 * mmacs * (1.5 if r else 1.0))
    assert latency == pytest.approx([0.1 * m for m in mmacs], abs=0.006)
    assert "min over 2 round(s) of the median of 2" in out
    assert "Pareto set" in out and err == ""


def test_tour_warns_when_rounds_disagree(capsys):
    # round 1 is 10x slower (another job took the cores): the minimum keeps round 0, and the tour warns
    mmacs, latency, _, err = _tour(capsys, lambda i, mmacs, r: 0.1 * mmacs * (10.0 if r else 1.0))
    assert latency == pytest.approx([0.1 * m for m in mmacs], abs=0.006)
    assert "warning: unstable CPU timings" in err and "rounds disagree by up to 10.0×" in err
    assert "not monotone" not in err


def test_tour_warns_when_latency_is_not_monotone_in_macs(capsys):
    # 1,500 ms for the min SubNet (fewest MACs), 15 ms for the others: what a busy machine once printed
    mmacs, latency, _, err = _tour(capsys, lambda i, mmacs, r: 1500.0 if i == 0 else 15.0)
    assert mmacs[0] == min(mmacs) and latency[0] == 1500.0 and set(latency[1:]) == {15.0}
    assert "warning: unstable CPU timings" in err and "latency is not monotone in MACs: SubNet 0" in err
    assert "rounds disagree" not in err


def test_main_runs_the_tour(capsys):
    threads = torch.get_num_threads()
    assert main(["tour", "--subnets", "2", "--warmup", "0", "--repeats", "1", "--rounds", "1", "--threads", "1"]) == 0
    assert torch.get_num_threads() == threads  # --threads is restored afterwards
    out = capsys.readouterr().out
    assert "SuperNet ws_ofa_mbv3_035_32" in out and ", 1 threads, OpenMP wait policy" in out
    assert out.count(" min ") + out.count(" max ") >= 2


@pytest.mark.parametrize("argv, message", [
    (["tour", "--model", "resnet50"], "--model must be one of"),
    (["--subnets", "1"], "--subnets must be >= 2"),  # no subcommand: the tour
    (["tour", "--rounds", "0"], "need --rounds >= 1"),
    (["tour", "--threads", "0"], "--threads must be >= 1"),
    (["train"], "invalid choice: 'train'"),
])
def test_bad_arguments_exit_2_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_python_dash_m_ws_core_is_the_same_command(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ws-core", "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("ws_core", run_name="__main__")
    assert exc.value.code == 0
    assert "{tour}" in capsys.readouterr().out
    assert "tour" in build_parser().format_help()

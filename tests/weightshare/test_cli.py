"""The ``ws`` front: one shape with the package commands (``python -m weightshare`` = ``ws``)."""

from __future__ import annotations

import runpy
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import timm

import weightshare
from weightshare.cli import COMMANDS, main


def test_python_m_and_console_script_print_the_same_help(monkeypatch, capsys):
    (script,) = entry_points(group="console_scripts", name="ws")
    assert script.value == "weightshare.cli:main" and script.load() is main
    runs = {  # what each launcher puts in sys.argv[0], and what it runs
        "python -m weightshare": (str(Path(weightshare.__file__).with_name("__main__.py")),
                                  lambda: runpy.run_module("weightshare", run_name="__main__")),
        "ws": (str(Path(sys.executable).with_name("ws")), script.load()),
    }
    outputs = {}
    for how, (argv0, run) in runs.items():
        monkeypatch.setattr(sys, "argv", [argv0, "--help"])
        with pytest.raises(SystemExit) as exit_:
            run()
        assert exit_.value.code == 0, how
        outputs[how] = capsys.readouterr().out
    assert outputs["python -m weightshare"] == outputs["ws"]
    assert outputs["ws"].startswith("usage: ws [-h] {" + ",".join(COMMANDS) + "}")


def test_importing_dunder_main_runs_nothing(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["ws", "--help"])  # would exit if __main__ ran the command
    monkeypatch.delitem(sys.modules, "weightshare.__main__", raising=False)
    assert runpy.run_module("weightshare.__main__", run_name="weightshare.__main__")["main"] is main


def test_without_a_command_the_exit_status_is_2(capsys):
    assert main([]) == 2
    assert f"a command is required; allowed: {list(COMMANDS)}" in capsys.readouterr().err


def test_demo_help_is_the_demos_own(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--help"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage: ws demo")


@pytest.mark.parametrize("argv", [["demo", "--model", "ws_ofa_mbv3_999"],
                                  ["train", "fit", "--model", "ws_ofa_mbv3_999"]])
def test_unknown_model_names_the_registered_ones(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert f"unknown model 'ws_ofa_mbv3_999' (registered: {', '.join(timm.list_models('ws_*'))})" in (
        capsys.readouterr().err)

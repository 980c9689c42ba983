"""The ``ws`` front: one shape with the package commands (``python -m weightshare`` = ``ws``)."""

from __future__ import annotations

import pytest
import timm

from weightshare.cli import COMMANDS, main


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

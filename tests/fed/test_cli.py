"""``ws-fed`` / ``python -m ws_fed``: one parser and one ``main`` in ``ws_fed.cli``, without Lightning."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ws_fed.cli import build_parser, main


def _exit_code(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_help_exits_0_and_names_the_commands_and_how_to_train(capsys):
    code, out, _ = _exit_code(["--help"], capsys)
    assert code == 0 and out.startswith("usage: ws-fed [-h] {specialise,partition}")
    text = " ".join(out.split())  # argparse wraps at the terminal width
    assert "flwr run packages/ws-fed" in text and "flwr stop <run-id>" in text


def test_bad_arguments_exit_2(capsys):
    code, _, err = _exit_code([], capsys)
    assert code == 2 and "required: command" in err
    code, _, err = _exit_code(["train"], capsys)
    assert code == 2 and "invalid choice: 'train'" in err


def test_main_returns_an_int_exit_status(capsys):
    status = main(["partition", "--num-partitions", "3", "--iid"])
    assert type(status) is int and status == 0
    assert "in 3 partitions, IID" in capsys.readouterr().out


def test_build_parser_gives_each_command_its_handler():
    parser = build_parser()
    assert parser.prog == "ws-fed"
    args = parser.parse_args(["specialise", "net.safetensors", "--macs", "1e6", "--criterion", "loss"])
    assert args.func.__name__ == "_specialise" and args.macs == [1e6] and args.criterion == "loss"
    assert parser.parse_args(["partition", "--alpha", "0.1"]).func.__name__ == "_partition"




def test_python_m_ws_fed_runs_without_lightning(tmp_path):
    """A real ``python -m ws_fed`` process in which every Lightning package fails to import."""
    for name in ("lightning", "pytorch_lightning", "lightning_fabric"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked by this test')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    check = subprocess.run([sys.executable, "-c", "import lightning"], env=env, capture_output=True, text=True,
                           timeout=60, check=False)
    assert check.returncode != 0 and "lightning is blocked" in check.stderr  # the block works
    done = subprocess.run([sys.executable, "-m", "ws_fed", "partition", "--num-partitions", "2", "--iid"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "in 2 partitions, IID" in done.stdout

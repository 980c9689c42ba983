"""One CLI shape for every package: ``<module>.cli:main`` is the console script, ``python -m <module>``
prints exactly what the script prints, and importing ``<module>.__main__`` runs nothing."""

from __future__ import annotations

import importlib
import runpy
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

# (module, console script, argument lists whose help both launchers must print alike, text the help shows)
CLIS = [
    ("ws_core", "ws-core", (["--help"], ["tour", "--help"]), "{tour}"),
    ("ws_train", "ws-train", (["--help"],), "{fit,validate,test,predict}"),
    ("ws_nas", "ws-nas", (["--help"], ["train", "--help"]), "train"),
    ("ws_fed", "ws-fed", (["--help"], ["partition", "--help"]), "partition"),
    ("ws_serve", "ws-serve", (["--help"], ["run", "--help"]), "{run,profile,simulate,replay,trace}"),
    ("ws_sushi", "ws-sushi", (["--help"], ["export", "--help"]), "simulate"),
    ("weightshare", "ws", (["--help"],), "demo"),
]


@pytest.mark.parametrize(("module", "script", "argvs", "shown"), CLIS, ids=[c[1] for c in CLIS])
def test_python_m_and_console_script_print_the_same_help(module, script, argvs, shown, monkeypatch, capsys):
    (entry,) = entry_points(group="console_scripts", name=script)
    assert entry.value == f"{module}.cli:main"
    package = importlib.import_module(module)
    launchers = {  # what each launcher puts in sys.argv[0], and what it runs
        f"python -m {module}": (str(Path(package.__file__).with_name("__main__.py")),
                                lambda: runpy.run_module(module, run_name="__main__")),
        script: (str(Path(sys.executable).with_name(script)), lambda: sys.exit(entry.load()())),
    }
    top_help = ""
    for argv in argvs:
        outputs = {}
        for how, (argv0, run) in launchers.items():
            monkeypatch.setattr(sys, "argv", [argv0, *argv])
            monkeypatch.delitem(sys.modules, f"{module}.__main__", raising=False)  # as in a fresh `python -m`
            with pytest.raises(SystemExit) as exit_:
                run()
            assert exit_.value.code == 0, (how, argv)
            outputs[how] = capsys.readouterr().out
        assert outputs[f"python -m {module}"] == outputs[script], argv
        assert outputs[script].startswith(f"usage: {script}"), outputs[script][:200]
        top_help = top_help or outputs[script]
    assert shown in top_help


@pytest.mark.parametrize("module", [c[0] for c in CLIS])
def test_importing_dunder_main_runs_nothing(module, monkeypatch):
    monkeypatch.setattr(sys, "argv", [module, "--help"])  # would exit if __main__ ran the command
    monkeypatch.delitem(sys.modules, f"{module}.__main__", raising=False)
    main = importlib.import_module(f"{module}.cli").main
    assert runpy.run_module(f"{module}.__main__", run_name=f"{module}.__main__")["main"] is main

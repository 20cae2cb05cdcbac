"""Each app has two doors, `uv run apps/NAME` (a checkout) and the console script `bl-NAME` (an install): both
reach the same `main` in its package, so their help and their one-line errors are the same but for the name."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

APPS = {
    "prepare": "bl-prepare",
    "train": "bl-train",
    "eval": "bl-eval",
    "predict": "bl-predict",
    "studio": "bl-studio",
}


def _outputs(call, capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `call()`, whether it returns or exits (argparse's --help exits)."""
    try:
        code = call()
    except SystemExit as done:
        code = done.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def _same_but_for_the_name(door: str, app: str, text: str) -> str:
    """`text` written under the name `door`, as `apps/<app>` would write it (argparse re-wraps the usage to the
    name's length, so whitespace runs count as one space); `bl-train[qlora]` and the like are package names."""
    return " ".join(re.sub(rf"{re.escape(door)}(?=[\s:])", f"apps/{app}", text).split())


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("argv", [["--help"], ["--log-level", "LOUD"]], ids=["help", "bad-value"])
def test_console_script_and_wrapper_reach_the_same_main(app, argv, app_module, monkeypatch, capsys):
    (script,) = entry_points(group="console_scripts", name=APPS[app])
    console = script.load()
    wrapper = app_module(app)
    assert console.__module__ == wrapper.main.__module__ == script.module  # the package's module, not a copy

    code, out, err = _outputs(lambda: wrapper.run(wrapper.main, f"apps/{app}", argv), capsys)
    monkeypatch.setattr(sys, "argv", [APPS[app], *argv])
    code_c, out_c, err_c = _outputs(console, capsys)

    assert code == code_c == (0 if argv == ["--help"] else 2)
    assert _same_but_for_the_name(APPS[app], app, out_c) == " ".join(out.split())
    assert _same_but_for_the_name(APPS[app], app, err_c) == " ".join(err.split())
    if argv == ["--help"]:
        assert out.startswith(f"usage: apps/{app} ") and out_c.startswith(f"usage: {APPS[app]} ") and not err
    else:
        for name, line in ((f"apps/{app}", err), (APPS[app], err_c)):  # one line naming the option and value
            assert line.startswith(f"{name}: error: ") and line.endswith(f" (see {name} --help)\n"), line
            assert line.count("\n") == 1 and "--log-level" in line and "'LOUD'" in line and not out, line


def test_installed_console_script_runs_as_a_process():
    """The script uv installed in the environment's bin/ (what `pip install bl-eval` gives a user)."""
    script = Path(sys.executable).parent / "bl-eval"
    proc = subprocess.run([str(script), "--tasks", "caer"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not proc.stdout
    assert proc.stderr == "bl-eval: error: --model, --data-root required (or --list) (see bl-eval --help)\n"

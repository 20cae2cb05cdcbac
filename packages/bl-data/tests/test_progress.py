"""Progress: a tqdm bar in a terminal, a few log lines with the same figures otherwise."""

import io
import logging
import sys

from tqdm.auto import tqdm

import bl_data.progress as progress_module
from bl_data.progress import LogProgress, progress


def test_a_terminal_gets_a_tqdm_bar(monkeypatch):
    monkeypatch.setattr(sys, "stderr", type("Tty", (io.StringIO,), {"isatty": lambda self: True})())
    bar = progress(total=5, desc="x")
    assert isinstance(bar, tqdm)
    bar.close()


def test_a_300_step_run_off_a_terminal_logs_about_ten_lines(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a TTY
    caplog.set_level(logging.INFO, logger="bl_data.progress")
    with progress(total=300, desc="demo", unit="step") as bar:
        assert isinstance(bar, LogProgress)
        for step in range(300):
            bar.set_postfix(loss=1.0 / (step + 1))
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert 10 <= len(lines) <= 11, lines
    assert (
        lines[0].startswith("demo 30/300 step (") and "loss=0.03333" in lines[0]
    )  # 1 / 30, the 30th postfix
    assert lines[-1].startswith("demo 300/300 step")


def test_lines_also_come_every_interval(monkeypatch, caplog):
    clock = iter(range(0, 10_000, 20))  # each call to monotonic() is 20 s later
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    caplog.set_level(logging.INFO, logger="bl_data.progress")
    bar = LogProgress(total=None, desc="prepare", unit="post", interval_s=30)
    for _ in range(6):
        bar.update(1)
    bar.close()
    assert len(caplog.records) == 3  # at 40, 80 and 120 s (every other update); the close has nothing new
    assert caplog.records[-1].getMessage().startswith("prepare 6 post")


def test_disabled_progress_logs_nothing(caplog):
    caplog.set_level(logging.INFO, logger="bl_data.progress")
    with LogProgress(total=3, desc="rank 1", disable=True) as bar:
        bar.update(3)
    assert not caplog.records

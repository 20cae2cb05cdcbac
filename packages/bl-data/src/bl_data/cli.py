"""What every app shares: one-line usage errors (exit 2, no traceback), path checks, logging set-up.

The apps' `main`s live in their packages (`bl_data.apps.prepare`, `bl_train.apps.train`, `bl_eval.apps.eval`,
`predict`, `studio`); `apps/NAME` and the console scripts `bl-NAME` call them through `run`.
A user error (bad path, bad value, unknown key, missing extra) ends as one line on stderr,
`apps/NAME: error: --option: problem`, and exit status 2; any other exception keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class UsageError(Exception):
    """A user error, reported as one line (`--option: problem`) with exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a `--log-level` option, whose errors raise `UsageError` instead of printing the usage."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--log-level", default="INFO", choices=LOG_LEVELS, help="logging level (default INFO)"
        )

    def error(self, message: str):
        raise UsageError(message)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def existing_file(text: str) -> Path:
    """argparse type: a path to a file that exists."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no file at {text}")
    return path


def existing_dir(text: str) -> Path:
    """argparse type: a path to a directory that exists."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no directory at {text}")
    return path


def output_dir(text: str) -> Path:
    """argparse type: a directory to write in: an existing one, or one that can be made (no file in the way,
    the nearest existing folder writable)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a directory")
    existing = next(p for p in (path, *path.parents) if p.exists())  # "." at worst
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"cannot make {text}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {existing} (permission denied)")
    return path


def model_dir(text: str) -> Path:
    """argparse type: a model directory; for a LoRA adapter folder (adapter_config.json), its base must exist."""
    path = existing_dir(text)
    adapter = path / "adapter_config.json"
    if adapter.is_file():
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if not base or not (Path(base) / "config.json").is_file():
            raise argparse.ArgumentTypeError(
                f"{adapter}: base_model_name_or_path {base} is not a model folder (moved or deleted?)"
            )
    return path


class _RankZero(logging.Filter):
    """Keep records of the process whose RANK is 0 (or unset); other ranks log only warnings and errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return os.environ.get("RANK", "0") == "0" or record.levelno >= logging.WARNING


def setup_logging(level: str = "INFO") -> None:
    """Apps configure logging (library code never does): one stderr handler, rank-0 filtered."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(_RankZero())
    logging.basicConfig(level=level, handlers=[handler], force=True)


def run(main: Callable[[list[str] | None], int], prog: str, argv: list[str] | None = None) -> int:
    """main(argv), with user errors reported in one line and exit status 2."""
    try:
        return main(argv)
    except UsageError as err:
        message = " ".join(str(err).split())
    except ImportError as err:  # an optional dependency (a package extra) that is not installed
        missing = err if isinstance(err, ModuleNotFoundError) else err.__cause__
        if not isinstance(missing, ModuleNotFoundError) or (missing.name or "bl_").startswith("bl_"):
            raise  # a broken import of our own code: an internal error, with its traceback
        message = str(err) if err is not missing else f"needs the optional package {missing.name!r} ({err})"
    print(f"{prog}: error: {message} (see {prog} --help)", file=sys.stderr)
    return 2

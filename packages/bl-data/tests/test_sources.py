"""Importers on fixtures written in the real formats (yt-dlp info.json, Pushshift NDJSON, BLIFT Parquet/JSONL)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bl_data.records import Comment, Failure, HeatmapMarker, Post
from bl_data.sources import read_blift, read_reddit, read_youtube


def _split(items: list[Post | Failure]) -> tuple[list[Post], list[Failure]]:
    return [i for i in items if isinstance(i, Post)], [i for i in items if isinstance(i, Failure)]


def _info(video_id: str, **overrides: object) -> dict:
    info = {
        "id": video_id,
        "title": "Make Your Own Footsteps",
        "channel": "Gatorade",
        "uploader": "Gatorade Uploads",
        "description": "An ad.",
        "duration": 61,
        "upload_date": "20210722",
        "tags": ["sports", "gymnastics"],
        "chapters": None,
        "view_count": 150_000,
        "like_count": 3_000,
        "comment_count": 2,
        "comments": [
            {
                "id": "c1",
                "text": "She's such an inspiration.",
                "like_count": 12,
                "author": "@a",
                "parent": "root",
            },
            {"id": "c2", "text": "Chills watching this.", "like_count": 3, "author": "@b", "parent": "c1"},
        ],
        "heatmap": [
            {"start_time": 0.0, "end_time": 0.61, "value": 1.0},
            {"start_time": 0.61, "end_time": 1.22, "value": 0.25},
        ],
    }
    info.update(overrides)
    return info


def _write_youtube(folder: Path, video_id: str, info: dict | bytes, ext: str | None = "mp4") -> None:
    data = info if isinstance(info, bytes) else json.dumps(info).encode()
    (folder / f"{video_id}.info.json").write_bytes(data)
    if ext:
        (folder / f"{video_id}.{ext}").write_bytes(b"media")


def test_youtube_reads_every_field(tmp_path: Path) -> None:
    _write_youtube(tmp_path, "BKPQkjRF4yY", _info("BKPQkjRF4yY"))
    (tmp_path / "BKPQkjRF4yY.webp").write_bytes(b"thumbnail")  # yt-dlp --write-thumbnail
    (tmp_path / "BKPQkjRF4yY.f137.mp4").write_bytes(b"fragment")
    [post] = list(read_youtube(tmp_path))
    assert post == Post(
        id="BKPQkjRF4yY",
        source="youtube",
        media_path=tmp_path / "BKPQkjRF4yY.mp4",
        title="Make Your Own Footsteps",
        channel="Gatorade",
        description="An ad.",
        duration=61.0,
        upload_date="20210722",
        tags=["sports", "gymnastics"],
        view_count=150_000,
        like_count=3_000,
        comment_count=2,
        comments=[
            Comment("She's such an inspiration.", 12, "@a", "c1", "root"),
            Comment("Chills watching this.", 3, "@b", "c2", "c1"),
        ],
        heatmap=[HeatmapMarker(0.0, 0.61, 1.0), HeatmapMarker(0.61, 1.22, 0.25)],
        is_video=True,
    )


def test_youtube_optional_fields_and_uploader_fallback(tmp_path: Path) -> None:
    info = _info("v1", channel=None, heatmap=None)
    del info["comments"], info["tags"]
    _write_youtube(tmp_path, "v1", info, "webm")
    [post] = list(read_youtube(tmp_path))
    assert (post.channel, post.heatmap, post.comments, post.tags) == ("Gatorade Uploads", None, [], [])
    assert post.media_path == tmp_path / "v1.webm"


@pytest.mark.parametrize(
    ("info", "field", "reason"),
    [
        (b'{"id": "bad", "title": ', None, "invalid JSON"),
        (b'{"id": "bad", "title": "caf\xe9"}', None, "not valid UTF-8"),
        (
            {"id": "bad", "title": "t", "view_count": "many", "like_count": 1},
            "view_count",
            "expected an integer",
        ),
        ({"id": "bad", "title": "t", "view_count": 10, "like_count": 11}, "like_count", "impossible"),
        ({"id": "bad", "title": "t", "view_count": 10, "like_count": -1}, "like_count", "impossible"),
        ({"id": "bad", "title": "t", "like_count": 1}, "view_count", "missing"),
        ({"id": "bad", "title": 5, "view_count": 10, "like_count": 1}, "title", "expected a string"),
        ({"id": "bad", "title": "\ud800", "view_count": 10, "like_count": 1}, "title", "lone surrogate"),
        (
            {"id": "bad", "title": "t", "view_count": True, "like_count": 1},
            "view_count",
            "expected an integer",
        ),
        (
            {"id": "bad", "title": "t", "view_count": 9, "like_count": 1, "upload_date": "2021"},
            "upload_date",
            "YYYYMMDD",
        ),
        (
            {"id": "bad", "title": "t", "view_count": 9, "like_count": 1, "heatmap": [{"start_time": 0}]},
            "heatmap[0].end_time",
            "missing",
        ),
        (
            {"id": "bad", "title": "t", "view_count": 9, "like_count": 1, "tags": ["ok", 3]},
            "tags[1]",
            "expected a string",
        ),
        (b'{"id": "bad", "title": "t", "view_count": NaN, "like_count": 1}', None, "non-finite"),
        (b"[1, 2]", None, "expected a JSON object"),
    ],
)
def test_youtube_bad_input_is_a_failure(
    tmp_path: Path, info: dict | bytes, field: str | None, reason: str
) -> None:
    _write_youtube(tmp_path, "bad", info)
    _write_youtube(tmp_path, "good", _info("good"))
    posts, failures = _split(list(read_youtube(tmp_path)))
    assert [p.id for p in posts] == ["good"]
    [failure] = failures
    assert failure.input == str(tmp_path / "bad.info.json")
    assert failure.stage == "import"
    assert failure.field == field
    assert reason in failure.reason
    assert failure.sample_id == (None if isinstance(info, bytes) else "bad")


def test_youtube_missing_media_duplicate_id_and_bad_comment(tmp_path: Path) -> None:
    _write_youtube(tmp_path, "a", _info("a"))
    _write_youtube(tmp_path, "a_copy", _info("a"))  # same id in another file
    _write_youtube(tmp_path, "b", _info("b"), ext=None)
    (tmp_path / "b.jpg").write_bytes(b"thumbnail only")
    comments = [
        {"id": "c1", "text": "fine comment here"},
        {"id": "c2", "text": None},
        {"id": "c1", "text": "x"},
        "not an object",
    ]
    _write_youtube(tmp_path, "c", _info("c", comments=comments))
    posts, failures = _split(list(read_youtube(tmp_path)))
    assert [p.id for p in posts] == ["a", "c"]
    assert [c.text for c in posts[1].comments] == ["fine comment here"]
    assert posts[1].comments[0].likes == 0
    got = {(f.sample_id, f.field, f.input.rsplit("/", 1)[1]) for f in failures}
    assert got == {
        ("a", "id", "a_copy.info.json"),
        ("b", "media", "b.info.json"),
        ("c", "comments[1].text", "c.info.json"),
        ("c", "comments[2].id", "c.info.json"),
        ("c", "comments[3]", "c.info.json"),
    }


def _ndjson(path: Path, rows: list[dict | str]) -> Path:
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _submission(post_id: str, **overrides: object) -> dict:
    row = {
        "id": post_id,
        "title": f"Post {post_id}",
        "subreddit": "pics",
        "score": 120,
        "ups": 121,
        "num_comments": 4,
        "url": f"https://i.redd.it/{post_id}.jpg",
        "permalink": f"/r/pics/comments/{post_id}/post/",
        "over_18": False,
        "author": "someone",
        "created_utc": 1546300800,
        "is_video": False,
    }
    row.update(overrides)
    return row


def _comment(post_id: str, body: str, score: int, comment_id: str, **overrides: object) -> dict:
    row = {"id": comment_id, "link_id": f"t3_{post_id}", "parent_id": f"t3_{post_id}", "body": body}
    row.update({"score": score, "author": "u", **overrides})
    return row


def test_reddit_joins_comments_and_reports_bad_lines(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    for name in ("p1.jpg", "p2.mp4", "p3.png", "dup.jpg"):
        (media / name).write_bytes(b"media")
    subs = _ndjson(
        tmp_path / "RS.ndjson.gz",
        [
            _submission("p1"),
            "{not json",
            _submission("p2", score=None, created_utc="1546300800.0", over_18=True),
            _submission("nomedia"),
            _submission("p3", num_comments=-1),
            _submission("dup"),
            _submission("dup", title="again"),
        ],
    )
    comments = _ndjson(
        tmp_path / "RC.ndjson",
        [
            _comment("p1", "low score comment here", 1, "k1"),
            _comment("p1", "high score comment here", 50, "k2"),
            _comment("other", "belongs to another post", 9, "k3"),
            _comment("p1", "tie with the low one", 1, "k4"),
            _comment("p2", "negative score is fine", -4, "k5"),
            _comment("p2", "bad score", "x", "k6"),  # type: ignore[arg-type]
            _comment("p1", "repeated id", 3, "k2"),
            {"link_id": "t1_abc", "body": "not a submission link"},
            "[]",
        ],
    )
    posts, failures = _split(list(read_reddit(subs, comments, media)))
    assert [p.id for p in posts] == ["p1", "p2", "dup"]
    p1, p2, _ = posts
    assert [c.id for c in p1.comments] == ["k2", "k1", "k4"]  # by score, ties in file order
    assert (p1.score, p1.comment_count, p1.upload_date, p1.subreddit, p1.is_video) == (
        120,
        4,
        "20190101",
        "pics",
        False,
    )
    assert p1.media_path == media / "p1.jpg"
    assert (p2.score, p2.over_18, p2.is_video, p2.upload_date) == (121, True, True, "20190101")
    assert [(c.text, c.likes) for c in p2.comments] == [("negative score is fine", -4)]
    got = {(f.input.rsplit("/", 1)[1], f.sample_id, f.field) for f in failures}
    assert got == {
        ("RS.ndjson.gz:2", None, None),
        ("RS.ndjson.gz:4", "nomedia", "media"),
        ("RS.ndjson.gz:5", "p3", "num_comments"),
        ("RS.ndjson.gz:7", "dup", "id"),
        ("RC.ndjson:6", "p2", "score"),
        ("RC.ndjson:7", "p1", "id"),
        ("RC.ndjson:8", None, "link_id"),
        ("RC.ndjson:9", None, None),
    }


def test_reddit_caps_comments_per_post(tmp_path: Path) -> None:
    (tmp_path / "p1.jpg").write_bytes(b"media")
    subs = _ndjson(tmp_path / "RS.ndjson", [_submission("p1")])
    comments = _ndjson(
        tmp_path / "RC.ndjson", [_comment("p1", f"comment {i}", i % 7, f"k{i}") for i in range(60)]
    )
    [post] = list(read_reddit(subs, comments, tmp_path, max_comments=3))
    assert [c.id for c in post.comments] == ["k6", "k13", "k20"]
    [post] = list(read_reddit(subs, None, tmp_path))
    assert post.comments == []


def test_reddit_rejects_zstd_and_bad_non_utf8_line(tmp_path: Path) -> None:
    (tmp_path / "p1.jpg").write_bytes(b"media")
    subs = tmp_path / "RS.ndjson"
    subs.write_bytes(json.dumps(_submission("p1")).encode() + b'\n{"id": "p2", "title": "\xff"}\n')
    posts, failures = _split(list(read_reddit(subs, None, tmp_path)))
    assert [p.id for p in posts] == ["p1"]
    assert failures[0].input.endswith("RS.ndjson:2") and "UTF-8" in failures[0].reason
    with pytest.raises(ValueError, match="zstd"):
        list(read_reddit(tmp_path / "RS_2019-01.zst", None, tmp_path))


def _blift_rows() -> list[dict]:
    return [
        {
            "url": "https://i.redd.it/abc123.jpg",
            "permalink": "/r/pics/comments/abc123/my_dog/",
            "comments": ["What a good dog!", "Best boy in the world"],
            "num_comments": 57,
            "subreddit": "pics",
            "title": "My dog",
        },
        {
            "url": "https://youtu.be/x",
            "permalink": "https://www.reddit.com/r/videos/comments/DEF456/a_video/",
            "comments": ["first", "second", "third"],
            "num_comments": 3,
            "subreddit": "videos",
            "title": "A video",
        },
        {
            "url": "u",
            "permalink": "/r/pics/no_id_here/",
            "comments": [],
            "num_comments": 0,
            "subreddit": "pics",
            "title": "t",
        },
        {
            "url": "u",
            "permalink": "/r/pics/comments/ghi789/x/",
            "comments": ["a"],
            "num_comments": -2,
            "subreddit": "pics",
            "title": "t",
        },
        {
            "url": "u",
            "permalink": "/r/pics/comments/nomedia/x/",
            "comments": ["a"],
            "num_comments": 1,
            "subreddit": "pics",
            "title": "t",
        },
        {
            "url": "u2",
            "permalink": "/r/pics/comments/abc123/again/",
            "comments": [],
            "num_comments": 0,
            "subreddit": "pics",
            "title": "dup",
        },
    ]


def _check_blift(items: list[Post | Failure], media: Path) -> list[Failure]:
    posts, failures = _split(items)
    assert [p.id for p in posts] == ["abc123", "def456"]
    dog, video = posts
    assert dog.source == "blift" and dog.score is None and dog.comment_count == 57
    assert dog.comments == [Comment("What a good dog!"), Comment("Best boy in the world")]
    assert (dog.media_path, dog.is_video, dog.subreddit, dog.title) == (
        media / "abc123.jpg",
        False,
        "pics",
        "My dog",
    )
    assert (video.media_path, video.is_video) == (media / "def456.mp4", True)
    assert [(f.sample_id, f.field) for f in failures] == [
        (None, "permalink"),
        ("ghi789", "num_comments"),
        ("nomedia", "media"),
        ("abc123", "permalink"),
    ]
    return failures


@pytest.fixture
def blift_media(tmp_path: Path) -> Path:
    media = tmp_path / "media"
    media.mkdir()
    for name in ("abc123.jpg", "def456.mp4", "ghi789.jpg"):
        (media / name).write_bytes(b"media")
    return media


def test_blift_parquet_folder(tmp_path: Path, blift_media: Path) -> None:
    rows = tmp_path / "data"
    rows.mkdir()
    table = pa.Table.from_pylist(_blift_rows())
    pq.write_table(table.slice(0, 2), rows / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(2), rows / "train-00001-of-00002.parquet")
    (rows / "README.md").write_text("ignored")
    failures = _check_blift(list(read_blift(rows, blift_media, batch_size=2)), blift_media)
    assert failures[1].input == f"{rows / 'train-00001-of-00002.parquet'}[1]"


def test_blift_jsonl_with_bad_rows(tmp_path: Path, blift_media: Path) -> None:
    rows = _blift_rows()
    path = _ndjson(tmp_path / "blift.jsonl", [*rows, {**rows[0], "comments": "not a list"}, "{"])
    posts, failures = _split(list(read_blift(path, blift_media)))
    _check_blift(posts + failures[:4], blift_media)
    assert [(f.field, f.input.rsplit(":", 1)[1]) for f in failures[4:]] == [("comments", "7"), (None, "8")]


def test_blift_corrupt_parquet_is_one_failure(tmp_path: Path, blift_media: Path) -> None:
    bad = tmp_path / "train.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    [failure] = list(read_blift(bad, blift_media))
    assert isinstance(failure, Failure) and failure.input == str(bad) and "Parquet" in failure.reason

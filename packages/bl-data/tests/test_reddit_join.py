"""The Reddit importer's out-of-core comment join (issue 20) against the in-memory join it replaced.

`legacy_read_reddit` is `read_reddit` as it was before issue 20 (every kept post and its comments in dicts),
kept here only as the reference: on varied dumps both must yield the same Posts and Failures, in order.
"""

from __future__ import annotations

import gzip
import json
import random
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bl_data.records import Comment, Failure, Post
from bl_data.sources import reddit
from bl_data.sources._common import (
    InvalidField,
    Record,
    attach_media,
    failure,
    index_media,
    read_ndjson,
    unforeseen,
)
from bl_data.sources.reddit import rank_key, read_reddit


def legacy_read_reddit(
    submissions: Path, comments: Path | None, media_folder: Path, max_comments: int | None = 100
) -> Iterator[Post | Failure]:
    """`read_reddit` before issue 20: the kept posts in a dict, their comments in lists, all in memory."""
    if max_comments is not None and max_comments < 0:
        raise ValueError(f"max_comments must be >= 0, got {max_comments}")
    submissions = Path(submissions)
    media = index_media(Path(media_folder))
    posts: dict[str, Post] = {}
    seen: set[str] = set()
    for _, line_input, data in read_ndjson(submissions):
        if isinstance(data, Failure):
            yield data
            continue
        sample_id: str | None = None
        try:
            record = Record(data)
            sample_id = record.text("id", required=True)
            post = reddit._post(record, sample_id)
        except InvalidField as err:
            yield failure(line_input, err.message, sample_id, err.field)
            continue
        except Exception as err:
            yield unforeseen(line_input, err, sample_id)
            continue
        if sample_id in seen:  # the first line with an id wins
            yield failure(line_input, "duplicate id", sample_id, "id")
            continue
        seen.add(sample_id)
        result = attach_media(post, media, line_input)
        if isinstance(result, Failure):
            yield result
        else:
            posts[sample_id] = result
    if comments is not None:
        yield from _legacy_join_comments(Path(comments), posts, max_comments)
    yield from posts.values()


def _legacy_join_comments(path: Path, posts: dict[str, Post], max_comments: int | None) -> Iterator[Failure]:
    kept: dict[str, list[tuple[int, int, Comment]]] = {}  # post id -> (-score, line, comment)
    ids: dict[str, set[str]] = {}
    for number, line_input, data in read_ndjson(path):
        if isinstance(data, Failure):
            yield data
            continue
        try:
            record = Record(data)
            link_id = record.text("link_id", required=True)
            if not link_id.startswith("t3_"):
                raise InvalidField("link_id", f"expected 't3_<id>', got {link_id!r}")
        except InvalidField as err:
            yield failure(line_input, err.message, None, err.field)
            continue
        post_id = link_id[3:]
        if post_id not in posts:
            continue
        try:
            comment = Comment(
                text=record.text("body", required=True),
                likes=record.integer("score", minimum=None) or 0,
                author=record.text("author"),
                id=record.text("id"),
                parent=record.text("parent_id"),
            )
        except InvalidField as err:
            yield failure(line_input, f"comment skipped: {err.message}", post_id, err.field)
            continue
        except Exception as err:
            yield unforeseen(line_input, err, post_id)
            continue
        seen = ids.setdefault(post_id, set())
        if comment.id is not None:
            if comment.id in seen:
                yield failure(line_input, f"duplicate comment id {comment.id!r}", post_id, "id")
                continue
            seen.add(comment.id)
        bucket = kept.setdefault(post_id, [])
        bucket.append((-comment.likes, number, comment))
        if max_comments is not None and len(bucket) > 2 * max_comments + 16:
            bucket.sort(key=lambda entry: entry[:2])
            del bucket[max_comments:]
    for post_id, bucket in kept.items():
        bucket.sort(key=lambda entry: entry[:2])
        posts[post_id].comments = [c for _, _, c in bucket[:max_comments]]


def _write(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def _dumps(folder: Path, seed: int, gz: bool) -> tuple[Path, Path, Path]:
    """Random submissions and comments dumps with every kind of line the join treats differently."""
    rng = random.Random(seed)
    media = folder / "media"
    media.mkdir(parents=True)
    ids = [f"p{i}" for i in range(24)]
    for post_id in ids[:16]:  # p16..p23 have no media
        (media / f"{post_id}.{rng.choice(['jpg', 'mp4', 'png'])}").write_bytes(b"")
    (media / "p0.webm").write_bytes(b"")  # two files for one id: the video wins
    huge = [2**70, -(2**70), 2**64 + 5, -(2**63) - 1, 10**300]
    subs = []
    for i in range(40):
        row = {
            "id": rng.choice(ids),
            "title": f"t{i}",
            "subreddit": "pics",
            "num_comments": rng.randint(0, 9),
        }
        row["score" if rng.random() < 0.8 else "ups"] = rng.choice([rng.randint(-5, 50), *huge])
        kind = rng.random()
        if kind < 0.05:
            subs.append("{not json")
        elif kind < 0.08:
            subs.append("[]")
        elif kind < 0.11:
            subs.append(json.dumps({**row, "title": None}))
        elif kind < 0.14:
            subs.append(json.dumps({**row, "num_comments": -1}))
        elif kind < 0.17:
            subs.append(json.dumps({**row, "created_utc": "soon"}))
        elif kind < 0.19:
            subs.append("   ")
        else:
            subs.append(json.dumps({**row, "created_utc": 1546300800 + i, "over_18": rng.random() < 0.2}))
    comments = []
    for i in range(900):
        post_id = rng.choice([*ids[:13], *ids[16:], "unknown", "p1x"])  # p13..p15: posts without comments
        score = rng.choice([rng.randint(-3, 6), rng.randint(-3, 6), rng.choice(huge), 4.0, None, "x"])
        [comment_id] = rng.choices([f"c{rng.randint(0, 60)}", None, "a\u0000b"], weights=[16, 3, 1])
        row = {"link_id": f"t3_{post_id}", "body": f"comment {i}", "score": score, "id": comment_id}
        row.update(author=rng.choice(["u", None]), parent_id=f"t3_{post_id}")
        kind = rng.random()
        if kind < 0.03:
            comments.append("{bad")
        elif kind < 0.05:
            comments.append(json.dumps({**row, "link_id": "t1_abc"}))
        elif kind < 0.07:
            comments.append(json.dumps({**row, "body": None}))
        elif kind < 0.08:
            comments.append(json.dumps({**row, "link_id": None}))
        elif kind < 0.09:
            comments.append('{"link_id": "t3_p2", "body": "\\ud800"}')  # a lone surrogate
        else:
            comments.append(json.dumps(row))
    suffix = ".ndjson.gz" if gz else ".ndjson"
    return _write(folder / f"RS{suffix}", subs), _write(folder / f"RC{suffix}", comments), media


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits every 7 rows and prunes from 20 stored comments on: the batching and pruning paths run."""
    monkeypatch.setattr(reddit, "_BATCH", 7)
    monkeypatch.setattr(reddit, "_PRUNE_MIN", 20)


@pytest.mark.parametrize("max_comments", [None, 0, 1, 3, 100])
@pytest.mark.parametrize("batches", ["default", "small"])
def test_out_of_core_join_yields_what_the_in_memory_join_did(
    tmp_path: Path, request: pytest.FixtureRequest, max_comments: int | None, batches: str
) -> None:
    if batches == "small":
        request.getfixturevalue("small_batches")
    for seed in range(3):
        subs, comments, media = _dumps(tmp_path / str(seed), seed, gz=seed == 1)
        expected = list(legacy_read_reddit(subs, comments, media, max_comments))
        most = max(len(item.comments) for item in expected if isinstance(item, Post))
        assert (most == max_comments) if max_comments in (0, 1, 3) else (most > 3)  # the dumps reach the cap
        assert list(read_reddit(subs, comments, media, max_comments)) == expected
    assert list(read_reddit(subs, None, media, max_comments)) == list(
        legacy_read_reddit(subs, None, media, max_comments)
    )


def test_rank_key_sorts_bytewise_as_minus_the_score() -> None:
    rng = random.Random(0)
    scores = [0, 1, -1, 255, 256, -255, -256, 2**63 - 1, -(2**63), 2**64, -(2**64), 10**300, -(10**300)]
    scores += [rng.randint(-(2**80), 2**80) for _ in range(300)] + [
        rng.randint(-300, 300) for _ in range(300)
    ]
    assert sorted(scores, key=rank_key) == sorted(scores, reverse=True)
    with sqlite3.connect(":memory:") as db:  # SQLite's BLOB order is the same
        db.execute("CREATE TABLE t (k BLOB, score TEXT)")
        db.executemany("INSERT INTO t VALUES (?, ?)", [(rank_key(s), str(s)) for s in scores])
        assert [int(s) for (s,) in db.execute("SELECT score FROM t ORDER BY k")] == sorted(
            scores, reverse=True
        )


def _one_post_with_comments(folder: Path, n: int) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "p1.jpg").write_bytes(b"")
    subs = _write(folder / "RS.ndjson", [json.dumps({"id": "p1", "title": "t", "subreddit": "s"})])
    rng = random.Random(1)
    rows = [
        {"link_id": "t3_p1", "body": f"c{i}", "score": rng.randint(0, 10**6), "id": f"k{i}"} for i in range(n)
    ]
    return subs, _write(folder / "RC.ndjson", [json.dumps(row) for row in rows])


def _stores(tmp: Path) -> list[Path]:
    return list(tmp.glob("bl-reddit-join-*"))


def test_pruning_keeps_about_max_comments_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_batches: None
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    subs, comments = _one_post_with_comments(tmp_path / "in", 600)
    items = read_reddit(subs, comments, tmp_path / "in", max_comments=3)
    post = next(items)  # the join is done: the store holds what it kept
    [store] = _stores(tmp_path)
    with sqlite3.connect(store / "join.sqlite") as db:
        [(held,)] = db.execute("SELECT count(*) FROM comments")
        [(ids,)] = db.execute("SELECT count(*) FROM comment_ids")
        [(cutoff,)] = db.execute("SELECT cutoff FROM posts")
    assert ids == 600  # every id is remembered for the duplicate check
    assert held <= 3 + 20 + 7  # kept + the prune's threshold + a batch (600 without pruning)
    expected = next(legacy_read_reddit(subs, comments, tmp_path / "in", max_comments=3))
    assert post == expected and len(post.comments) == 3
    assert cutoff is not None and cutoff >= rank_key(
        post.comments[-1].likes
    )  # the 3rd best at the last prune
    assert list(items) == [] and _stores(tmp_path) == []


def test_store_is_removed_when_closed_early_or_on_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    subs, comments, media = _dumps(tmp_path / "in", 0, gz=False)
    items = read_reddit(subs, comments, media)
    next(items)  # a Failure of the submissions dump: the store exists
    [store] = _stores(tmp_path)
    assert (store / "join.sqlite").is_file()
    items.close()
    assert not store.exists()
    items = read_reddit(subs, comments, media)
    while "RC.ndjson" not in next(items).input:  # stop in the comment pass
        pass
    assert _stores(tmp_path) != []
    items.close()
    assert _stores(tmp_path) == []
    zstd = tmp_path / "RC_2020-01.zst"
    zstd.write_bytes(b"")
    with pytest.raises(ValueError, match="zstd") as raised:
        list(read_reddit(subs, zstd, media))  # raised after the submissions were stored
    assert raised.traceback and _stores(tmp_path) == []  # removed, not left to the frames' finalizers


def test_a_join_started_in_one_thread_goes_on_and_closes_in_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    subs, comments, media = _dumps(tmp_path / "in", 2, gz=False)
    items = read_reddit(subs, comments, media)
    first = []
    worker = threading.Thread(target=lambda: first.extend(next(items) for _ in range(3)))
    worker.start()
    worker.join()
    expected = list(legacy_read_reddit(subs, comments, media))
    assert first + [next(items) for _ in range(3)] == expected[:6]
    items.close()
    assert _stores(tmp_path) == []

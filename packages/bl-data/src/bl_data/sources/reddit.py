"""Reddit importer: Pushshift / Arctic-Shift NDJSON dumps (submissions + comments) and a media folder.

Dumps are streamed line by line; plain, `.gz`, `.bz2` and `.xz` files are read (decompress `.zst` dumps with
`zstd -d --long=31` first). Only posts whose media is in the folder, and their comments, are held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from bl_data.records import Comment, Failure, Post
from bl_data.sources._common import (
    InvalidField,
    Record,
    attach_media,
    failure,
    index_media,
    read_ndjson,
    unforeseen,
)


def read_reddit(
    submissions: Path,
    comments: Path | None,
    media_folder: Path,
    max_comments: int | None = 100,
) -> Iterator[Post | Failure]:
    """Yield a `Post` per valid submission with media (in file order), or a `Failure` per bad input.

    Required submission fields: `id`, `title`, `subreddit`; the upvotes are `score`, else `ups`. Media is
    `<media_folder>/<id>.<ext>`. A repeated submission id is a duplicate: the first line wins. Comments join on
    `link_id == "t3_<id>"`; each post keeps its `max_comments` highest-scored comments (None: all), sorted by
    score, ties in file order. Comments of other posts are skipped unread; a bad comment of a kept post is
    reported and skipped.
    """
    if max_comments is not None and max_comments < 0:
        raise ValueError(f"max_comments must be >= 0, got {max_comments}")
    submissions = Path(submissions)
    media = index_media(Path(media_folder))
    posts: dict[str, Post] = {}
    seen: set[str] = set()  # the ids without a media file (`MediaIndex.claim` flags the others)
    for _, line_input, data in read_ndjson(submissions):
        if isinstance(data, Failure):
            yield data
            continue
        sample_id: str | None = None
        try:
            record = Record(data)
            sample_id = record.text("id", required=True)
            post = _post(record, sample_id)
        except InvalidField as err:
            yield failure(line_input, err.message, sample_id, err.field)
            continue
        except Exception as err:  # whatever else one line does, the others go on
            yield unforeseen(line_input, err, sample_id)
            continue
        if not media.claim(sample_id, seen):
            yield failure(line_input, "duplicate id", sample_id, "id")
            continue
        result = attach_media(post, media, line_input)
        if isinstance(result, Failure):
            yield result
        else:
            posts[sample_id] = result
    if comments is not None:
        yield from _join_comments(Path(comments), posts, max_comments)
    yield from posts.values()


def _post(record: Record, sample_id: str) -> Post:
    score = record.integer("score", minimum=None)
    if score is None:
        score = record.integer("ups", minimum=None)
    return Post(
        id=sample_id,
        source="reddit",
        media_path=None,
        title=record.text("title", required=True),
        subreddit=record.text("subreddit", required=True),
        score=score,
        comment_count=record.integer("num_comments"),
        url=record.text("url"),
        permalink=record.text("permalink"),
        over_18=record.flag("over_18"),
        author=record.text("author"),
        upload_date=_date(record),
    )


def _date(record: Record) -> str | None:
    """`created_utc` (int, float or numeric string in old Pushshift dumps) as yt-dlp's YYYYMMDD (UTC)."""
    value = record.data.get("created_utc")
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError("a boolean is not a timestamp")
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y%m%d")
    except (TypeError, ValueError, OverflowError, OSError) as err:
        raise InvalidField("created_utc", f"expected a Unix timestamp, got {value!r}") from err


def _join_comments(path: Path, posts: dict[str, Post], max_comments: int | None) -> Iterator[Failure]:
    """Attach each comment of a held post to it; yield a Failure per bad line of a held post."""
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
        except Exception as err:  # whatever else one line does, the others go on
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

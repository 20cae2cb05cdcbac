"""YouTube importer: a folder of yt-dlp output, `<id>.info.json` plus the media `<id>.<ext>`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from bl_data.records import Comment, Failure, HeatmapMarker, Post
from bl_data.sources._common import (
    VIDEO_EXTENSIONS,
    InvalidField,
    Record,
    attach_media,
    failure,
    index_media,
    loads,
    read_regular,
    unforeseen,
)

_UPLOAD_DATE = re.compile(r"\d{8}")


def read_youtube(folder: Path) -> Iterator[Post | Failure]:
    """Yield a `Post` per `*.info.json` in `folder` (sorted by file name), or a `Failure` for a bad one.

    Required: `id`, `title`, `view_count`, `like_count` (Listing 1 needs likes/views); `like_count` above
    `view_count` is impossible. An `info.json` that is not a regular file (a named pipe, a directory) is a
    Failure and is never opened. Media is the video `<id>.<ext>` in the same folder. A post whose id was already
    seen is a duplicate: the first file wins. A malformed comment is reported and skipped; the post is kept.
    """
    folder = Path(folder)
    media = index_media(folder, VIDEO_EXTENSIONS)  # not the `<id>.webp` / `<id>.jpg` thumbnails
    for path in sorted(folder.glob("*.info.json")):
        sample_id: str | None = None
        try:
            record = Record(loads(read_regular(path)))
            sample_id = record.text("id", required=True)
            post, bad_comments = _post(record, sample_id)
        except InvalidField as err:
            yield failure(str(path), err.message, sample_id, err.field)
            continue
        except Exception as err:  # whatever else one file does, the others go on
            yield unforeseen(str(path), err, sample_id)
            continue
        if not media.claim(sample_id):
            yield failure(str(path), "duplicate id", sample_id, "id")
            continue
        for field, message in bad_comments:
            yield failure(str(path), f"comment skipped: {message}", sample_id, field)
        yield attach_media(post, media, str(path))


def _post(record: Record, sample_id: str) -> tuple[Post, list[tuple[str, str]]]:
    views = record.integer("view_count", required=True)
    likes = record.integer("like_count", required=True)
    if likes > views:
        raise InvalidField("like_count", f"impossible value: {likes} likes > {views} views")
    upload_date = record.text("upload_date")
    if upload_date is not None and not _UPLOAD_DATE.fullmatch(upload_date):
        raise InvalidField("upload_date", f"expected YYYYMMDD, got {upload_date!r}")
    comments, bad_comments = _comments(record)
    post = Post(
        id=sample_id,
        source="youtube",
        media_path=None,
        title=record.text("title", required=True),
        channel=record.text("channel") or record.text("uploader"),
        description=record.text("description"),
        duration=record.number("duration"),
        upload_date=upload_date,
        tags=record.strings("tags") or [],
        view_count=views,
        like_count=likes,
        comment_count=record.integer("comment_count"),
        comments=comments,
        heatmap=_heatmap(record),
    )
    return post, bad_comments


def _comments(record: Record) -> tuple[list[Comment], list[tuple[str, str]]]:
    """The valid comments in file order, and (field, message) for each skipped one (bad or duplicate id)."""
    comments: list[Comment] = []
    bad: list[tuple[str, str]] = []
    ids: set[str] = set()
    for prefix, raw in record.objects("comments") or []:
        try:
            item = Record(raw, prefix)
            comment_id = item.text("id")
            comment = Comment(
                text=item.text("text", required=True),
                likes=item.integer("like_count") or 0,
                author=item.text("author"),
                id=comment_id,
                parent=item.text("parent"),
            )
        except InvalidField as err:
            bad.append((err.field, err.message))
            continue
        if comment_id is not None:
            if comment_id in ids:
                bad.append((prefix + "id", f"duplicate comment id {comment_id!r}"))
                continue
            ids.add(comment_id)
        comments.append(comment)
    return comments, bad


def _heatmap(record: Record) -> list[HeatmapMarker] | None:
    items = record.objects("heatmap")
    if not items:
        return None
    markers = []
    for prefix, raw in items:
        item = Record(raw, prefix)
        start = item.number("start_time", required=True)
        end = item.number("end_time", required=True)
        value = item.number("value", required=True)
        if end <= start:
            raise InvalidField(item.prefix + "end_time", f"impossible value: end {end} <= start {start}")
        if value > 1.0:
            raise InvalidField(item.prefix + "value", f"impossible value {value} (> 1)")
        markers.append(HeatmapMarker(start, end, value))
    return markers

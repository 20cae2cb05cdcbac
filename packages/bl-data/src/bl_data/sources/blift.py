"""Importer of the released BLIFT rows (`behavior-in-the-wild/BLIFT`), joined with user-downloaded media.

Rows hold `url, permalink, comments (list[str]), num_comments, subreddit, title`; the media are not shipped.
The post id is parsed from the permalink (`/r/<sub>/comments/<id>/...`) and the media is `<id>.<ext>`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bl_data.records import Comment, Failure, Post
from bl_data.sources._common import (
    InvalidField,
    Record,
    attach_media,
    failure,
    index_media,
    not_regular,
    read_ndjson,
    unforeseen,
)

_PERMALINK = re.compile(r"/r/[^/]+/comments/([0-9a-z]+)(?:/|$)", re.IGNORECASE)
_ROW_SUFFIXES = (".parquet", ".jsonl", ".ndjson")


def read_blift(rows: Path, media_folder: Path, batch_size: int = 1024) -> Iterator[Post | Failure]:
    """Yield a `Post` per valid row with media, or a `Failure` per bad row, file or missing media.

    `rows` is a Parquet / JSONL file or a folder of them (e.g. the dataset's `data/train-*.parquet`), read in
    sorted order. Comments keep the released order with 0 likes (the rows carry no scores), so "top comments"
    are the first ones. BLIFT rows carry no upvotes: `Post.score` is None. A repeated post id is a duplicate:
    the first row wins.
    """
    rows = Path(rows)
    if not rows.exists():
        raise FileNotFoundError(f"BLIFT rows {rows} do not exist")
    media = index_media(Path(media_folder))
    files = sorted(p for p in rows.iterdir() if p.suffix in _ROW_SUFFIXES) if rows.is_dir() else [rows]
    for path in files:
        for row_input, data in _rows(path, batch_size):
            if isinstance(data, Failure):
                yield data
                continue
            sample_id: str | None = None
            try:
                record = Record(data)
                permalink = record.text("permalink", required=True)
                match = _PERMALINK.search(permalink)
                if match is None:
                    raise InvalidField("permalink", f"no /r/<sub>/comments/<id>/ in {permalink!r}")
                sample_id = match.group(1).lower()
                post = _post(record, sample_id, permalink)
            except InvalidField as err:
                yield failure(row_input, err.message, sample_id, err.field)
                continue
            except Exception as err:  # whatever else one row does, the others go on
                yield unforeseen(row_input, err, sample_id)
                continue
            if not media.claim(sample_id):
                yield failure(row_input, "duplicate id", sample_id, "permalink")
                continue
            yield attach_media(post, media, row_input)


def _rows(path: Path, batch_size: int) -> Iterator[tuple[str, object]]:
    """(input name, decoded row or Failure) for each row; an unreadable file is one Failure."""
    if path.suffix == ".parquet":
        reason = not_regular(path)
        if reason is not None:
            yield str(path), failure(str(path), reason)
            return
        try:
            index = 0
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
                for row in batch.to_pylist():
                    yield f"{path}[{index}]", row
                    index += 1
        except (pa.ArrowException, OSError) as err:
            yield str(path), failure(str(path), f"unreadable Parquet: {err}")
        return
    for _, row_input, data in read_ndjson(path):
        yield row_input, data


def _post(record: Record, sample_id: str, permalink: str) -> Post:
    texts = record.strings("comments", required=True)
    num_comments = record.integer("num_comments", required=True)
    return Post(
        id=sample_id,
        source="blift",
        media_path=None,
        title=record.text("title", required=True),
        subreddit=record.text("subreddit", required=True),
        comment_count=num_comments,
        comments=[Comment(text=text) for text in texts],
        url=record.text("url", required=True),
        permalink=permalink,
    )

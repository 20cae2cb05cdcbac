"""Reddit importer: Pushshift / Arctic-Shift NDJSON dumps (submissions + comments) and a media folder.

Dumps are streamed line by line; plain, `.gz`, `.bz2` and `.xz` files are read (decompress `.zst` dumps with
`zstd -d --long=31` first). The join runs out of core, in an SQLite file in a private temporary directory
(`$TMPDIR`, local disk: not the output folder, which may be shared storage), removed when the generator
finishes, fails or is closed: the submissions with a media file (in file order), every comment id of each
kept post (the duplicate-comment check) and the comments that may still be among a post's `max_comments`
best (pruned with a window function whenever as many have been stored as the last prune kept; at most about
twice the kept comments are on disk). The media index (`index_media`, with the ids seen without a media file:
the duplicate-id check) is on disk too. In memory: one batch of rows (`_BATCH`), SQLite's page caches
(`_CACHE_MIB` here) and, while posts are yielded, one post with its comments and a page (`_PAGE` rows) of
posts and of comments.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path

from bl_data.diskstore import DiskStore
from bl_data.records import Comment, Failure, Post
from bl_data.sources._common import (
    InvalidField,
    MediaIndex,
    Record,
    attach_media,
    failure,
    index_media,
    read_ndjson,
    unforeseen,
)

_BATCH = 10_000  # rows buffered, and writes per flush (a commit)
_PRUNE_MIN = 200_000  # comments stored before the first prune; later ones wait for as many as were kept
_CACHE_MIB = 32  # SQLite's page cache
_PAGE = 256  # rows per read while the posts are yielded

_SCHEMA = """
CREATE TABLE posts (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, post BLOB NOT NULL, cutoff BLOB);
CREATE TABLE comment_ids (post INTEGER, id TEXT, PRIMARY KEY (post, id)) WITHOUT ROWID;
CREATE TABLE comments (
    post INTEGER NOT NULL, rank_key BLOB NOT NULL, line INTEGER NOT NULL,
    text TEXT NOT NULL, likes NOT NULL, author TEXT, id TEXT, parent TEXT
);
"""
# `comments` is a heap (appends are cheap; an index would take random writes); these queries sort it.
# each comment's place in its post: by rank_key, then line (the file order breaks ties)
_PLACES = """
SELECT rowid AS row, post, rank_key, row_number() OVER (PARTITION BY post ORDER BY rank_key, line) AS place
FROM comments
"""
_PRUNE = f"DELETE FROM comments WHERE rowid IN (SELECT row FROM ({_PLACES}) WHERE place > ?)"
# a full post's worst kept key: a later comment with a key >= it can never get in
_CUTOFFS = f"SELECT rank_key, post FROM ({_PLACES}) WHERE place = ?"
_BEST = "SELECT post, text, likes, author, id, parent FROM comments ORDER BY post, rank_key, line"
_INT64 = range(-(2**63), 2**63)


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
    reported and skipped. The posts come after every Failure of both dumps.
    """
    if max_comments is not None and max_comments < 0:
        raise ValueError(f"max_comments must be >= 0, got {max_comments}")
    media = index_media(Path(media_folder))
    store = _JoinStore(max_comments)
    try:
        yield from _read_submissions(Path(submissions), media, store)
        store.flush()  # every post is written before the comments look them up
        if comments is not None:
            yield from _join_comments(Path(comments), store)
        store.flush()
        yield from store.posts()
    finally:
        store.close()
        media.close()


def _read_submissions(path: Path, media: MediaIndex, store: _JoinStore) -> Iterator[Failure]:
    """Store each valid submission with a media file; yield a Failure per bad line."""
    for _, line_input, data in read_ndjson(path):
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
        if not media.claim(sample_id):
            yield failure(line_input, "duplicate id", sample_id, "id")
            continue
        result = attach_media(post, media, line_input)
        if isinstance(result, Failure):
            yield result
        else:
            store.add_post(result)


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


def _join_comments(path: Path, store: _JoinStore) -> Iterator[Failure]:
    """Store each comment of a stored post; yield a Failure per bad line of a stored post."""
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
        held = store.find(post_id)
        if held is None:
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
        if comment.id is not None and not store.claim_comment_id(held[0], comment.id):
            yield failure(line_input, f"duplicate comment id {comment.id!r}", post_id, "id")
            continue
        store.add_comment(held, number, comment)


def rank_key(likes: int) -> bytes:
    """Bytes that sort (bytewise, as SQLite compares BLOBs) as `-likes`: most liked first, for an int of any
    size (a JSON score may not fit SQLite's 64-bit INTEGER)."""
    n = -likes
    size = (abs(n).bit_length() + 7) // 8  # <= 1,800 bytes: Python parses JSON ints of <= 4,300 digits
    if n >= 0:
        return b"\x01" + size.to_bytes(2, "big") + n.to_bytes(size, "big")
    inverted = (1 << 8 * size) - 1 + n  # a longer or larger magnitude sorts first
    return b"\x00" + (0xFFFF - size).to_bytes(2, "big") + inverted.to_bytes(size, "big")


class _JoinStore:
    """The join's tables in a `DiskStore` (SQLite in a private temporary directory); `close` removes it."""

    def __init__(self, max_comments: int | None) -> None:
        self.max_comments = max_comments
        # one consumer at a time (a generator), but not always one thread: Ray's driver imports in a thread
        self.store = DiskStore(
            _SCHEMA, _CACHE_MIB, prefix="bl-reddit-join-", filename="join.sqlite", exclusive=False
        )
        self._posts: list[tuple[str, bytes]] = []  # (id, pickled post), not yet written
        self._comments: list[tuple] = []  # rows of `comments`, not yet written
        self._buffered = 0  # writes since the last flush
        self._added = 0  # comments written since the last prune
        self._kept = 0  # comments left by the last prune

    def add_post(self, post: Post) -> None:
        self._posts.append((post.id, pickle.dumps(post, pickle.HIGHEST_PROTOCOL)))
        self.wrote()

    def find(self, post_id: str) -> tuple[int, bytes | None] | None:
        """(seq, cutoff) of a written post, or None."""
        return self.store.one("SELECT seq, cutoff FROM posts WHERE id = ?", (post_id,))

    def claim_comment_id(self, seq: int, comment_id: str) -> bool:
        """True the first time post `seq` sees `comment_id`."""
        claimed = self.store.write("INSERT OR IGNORE INTO comment_ids VALUES (?, ?)", (seq, comment_id))
        self.wrote()
        return claimed == 1

    def add_comment(self, held: tuple[int, bytes | None], line: int, comment: Comment) -> None:
        """Keep `comment` (line `line`) for post `held` unless it can no longer be among the best."""
        seq, cutoff = held
        key = rank_key(comment.likes)
        if self.max_comments == 0 or (cutoff is not None and key >= cutoff):  # ties: the earlier line wins
            return
        likes = comment.likes if comment.likes in _INT64 else str(comment.likes)  # SQLite's INTEGER is 64-bit
        self._comments.append(
            (seq, key, line, comment.text, likes, comment.author, comment.id, comment.parent)
        )
        self.wrote()

    def wrote(self) -> None:
        """Count one write; a full batch is flushed."""
        self._buffered += 1
        if self._buffered >= _BATCH:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows, prune when due, commit."""
        self.store.write_many("INSERT INTO posts (id, post) VALUES (?, ?)", self._posts)
        self.store.write_many("INSERT INTO comments VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self._comments)
        self._added += len(self._comments)
        self._posts.clear()
        self._comments.clear()
        self._buffered = 0
        if self.max_comments is not None and self._added >= max(_PRUNE_MIN, self._kept):
            self.store.write(_PRUNE, (self.max_comments,))
            for cutoffs in self.store.scan(_CUTOFFS, (self.max_comments,)):
                self.store.write_many("UPDATE posts SET cutoff = ? WHERE seq = ?", cutoffs)
            self._kept = self.store.one("SELECT count(*) FROM comments")[0]
            self._added = 0
        self.store.commit()

    def posts(self) -> Iterator[Post]:
        """The stored posts in file order, each with its best comments (one sorted scan of `comments`)."""
        # in post order, each post's best first
        best = chain.from_iterable(self.store.scan(_BEST, size=_PAGE))
        row = next(best, None)
        stored = self.store.scan("SELECT seq, post FROM posts ORDER BY seq", size=_PAGE)
        for seq, blob in chain.from_iterable(stored):
            post = pickle.loads(blob)
            while row is not None and row[0] == seq:
                if self.max_comments is None or len(post.comments) < self.max_comments:
                    text, likes, author, comment_id, parent = row[1:]
                    post.comments.append(Comment(text, int(likes), author, comment_id, parent))
                row = next(best, None)
            yield post

    def close(self) -> None:
        self.store.close()

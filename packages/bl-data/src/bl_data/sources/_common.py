"""Shared helpers of the importers: typed field access, strict JSON/UTF-8 decoding, the media index."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import math
import os
import stat
import sys
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from bl_data.records import Failure, Post

STAGE = "import"
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# what a damaged or cut-off stream raises mid-read (BadGzipFile and bz2's "Invalid data stream" are OSErrors)
_STREAM_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)
_FILE_TYPES = {
    stat.S_ISDIR: "a directory",
    stat.S_ISFIFO: "a named pipe (FIFO)",
    stat.S_ISSOCK: "a socket",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
}

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "mov", "m4v", "avi", "flv", "gif")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
# Earlier in the tuple = preferred when one id has several media files.
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS


class InvalidField(Exception):
    """A field is missing or has a wrong type or value. `field` is "" for the record as a whole."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def failure(input: str, reason: str, sample_id: str | None = None, field: str | None = None) -> Failure:
    return Failure(input=input, stage=STAGE, reason=reason, sample_id=sample_id, field=field or None)


def unforeseen(input: str, err: Exception, sample_id: str | None = None) -> Failure:
    """The Failure of a line or file that broke its importer in a way no check foresaw: it fails alone."""
    from bl_data.stages import exception_reason  # imports the media stack: only on this rare path

    return failure(input, f"cannot be imported ({exception_reason(err)})", sample_id)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not valid JSON")


def loads(data: bytes) -> Any:
    """Strictly decode UTF-8 JSON. Raises `InvalidField("", ...)` on bad bytes, bad JSON, NaN/Infinity or
    nesting too deep for the decoder (a poison line must fail alone, not take the run down)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidField("", f"not valid UTF-8 (byte {err.start})") from err
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as err:  # json.JSONDecodeError is a ValueError
        raise InvalidField("", f"invalid JSON: {err}") from err
    except RecursionError as err:
        limit = sys.getrecursionlimit()
        raise InvalidField(
            "", f"JSON nested too deeply to decode (the limit is about {limit} levels)"
        ) from err


def not_regular(path: Path) -> str | None:
    """Why `path` is not a regular file (after symbolic links), or None when it is one. Never opens it, so a
    named pipe cannot block the caller."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        return f"cannot stat ({err.strerror})"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_TYPES.items() if test(mode)), "not a regular file")
    return f"{kind}, not a regular file"


def read_regular(path: Path) -> bytes:
    """The bytes of a regular file; `InvalidField("", ...)` for anything else (never opened) or a read error."""
    reason = not_regular(path)
    if reason is not None:
        raise InvalidField("", reason)
    try:
        return path.read_bytes()
    except OSError as err:
        raise InvalidField("", f"unreadable ({err.strerror or err})") from err


def _open(path: Path) -> IO[bytes]:
    opener = _OPENERS.get(path.suffix)
    return opener(path, "rb") if opener else path.open("rb")


def read_ndjson(path: Path) -> Iterator[tuple[int, str, object]]:
    """(line number, `<path>:<line>`, decoded object or a Failure) per non-blank line, streamed.

    Plain, `.gz`, `.bz2` and `.xz` files are read. A file that is not regular or cannot be opened is one
    Failure (line 0); a stream that breaks off (truncated or corrupt compressed data) ends with a Failure
    naming the line and the decompressed byte offset where it broke, after every line read before it.
    """
    if path.suffix == ".zst":
        raise ValueError(f"{path}: zstd files are not read directly; decompress with `zstd -d --long=31`")
    reason = not_regular(path)
    if reason is None:
        try:
            f = _open(path)
        except OSError as err:
            reason = f"unreadable ({err.strerror or err})"
    if reason is not None:
        yield 0, str(path), failure(str(path), reason)
        return
    with f:
        lines = iter(f)
        number = offset = 0
        while True:
            try:
                line = next(lines)
            except StopIteration:
                return
            except _STREAM_ERRORS as err:
                where = f"{path}:{number + 1}"
                message = (
                    f"stream breaks off in line {number + 1} (after byte {offset} of the decompressed data)"
                )
                yield number + 1, where, failure(where, f"{message}: {type(err).__name__}: {err}")
                return
            number += 1
            offset += len(line)
            if not line.strip():
                continue
            line_input = f"{path}:{number}"
            try:
                yield number, line_input, loads(line)
            except InvalidField as err:
                yield number, line_input, failure(line_input, err.message)


def _check_text(value: str, field: str) -> str:
    """`value` unchanged, or `InvalidField` when it holds lone surrogates (JSON `\\ud800` escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidField(field, "not valid UTF-8 (lone surrogate)") from err
    return value


class Record:
    """Typed, validated access to one JSON object; every accessor raises `InvalidField`."""

    def __init__(self, data: object, prefix: str = "") -> None:
        if not isinstance(data, dict):
            raise InvalidField(prefix.rstrip("."), f"expected a JSON object, got {type(data).__name__}")
        self.data = data
        self.prefix = prefix

    def _get(self, name: str, required: bool) -> Any:
        value = self.data.get(name)
        if value is None and required:
            raise InvalidField(self.prefix + name, "missing")
        return value

    def _wrong(self, name: str, expected: str, value: Any) -> InvalidField:
        return InvalidField(self.prefix + name, f"expected {expected}, got {type(value).__name__}")

    def text(self, name: str, required: bool = False) -> str | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._wrong(name, "a string", value)
        if required and not value.strip():
            raise InvalidField(self.prefix + name, "empty")
        return _check_text(value, self.prefix + name)

    def integer(self, name: str, required: bool = False, minimum: int | None = 0) -> int | None:
        """An int (an integral float is accepted); below `minimum` is an impossible value."""
        value = self._get(name, required)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(name, "an integer", value)
        if minimum is not None and value < minimum:
            raise InvalidField(self.prefix + name, f"impossible value {value} (< {minimum})")
        return value

    def number(self, name: str, required: bool = False, minimum: float | None = 0.0) -> float | None:
        value = self._get(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong(name, "a finite number", value)
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer too large for a float (JSON allows 4,300 digits)
            raise InvalidField(
                self.prefix + name, f"impossible value: a {len(str(value))}-digit number"
            ) from None
        if not finite:
            raise self._wrong(name, "a finite number", value)
        if minimum is not None and value < minimum:
            raise InvalidField(self.prefix + name, f"impossible value {value} (< {minimum})")
        return float(value)

    def flag(self, name: str, default: bool = False) -> bool:
        value = self._get(name, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._wrong(name, "a boolean", value)
        return value

    def strings(self, name: str, required: bool = False) -> list[str] | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self._wrong(name, "a list of strings", value)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self._wrong(f"{name}[{i}]", "a string", item)
            _check_text(item, f"{self.prefix}{name}[{i}]")
        return value

    def objects(self, name: str) -> list[tuple[str, object]] | None:
        """(prefix, raw item) of each item of a list field; `Record(item, prefix)` validates one."""
        value = self._get(name, False)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self._wrong(name, "a list of objects", value)
        return [(f"{self.prefix}{name}[{i}].", item) for i, item in enumerate(value)]


class MediaIndex:
    """`<key>` -> `<folder>/<key>.<ext>` (see `index_media`), on disk for 730k files (`bl_data.diskstore`):
    per key the chosen file's name, its extension's rank and a claim flag; and the keys without a file that a
    post claimed. A context manager: leaving it removes the store."""

    _SCHEMA = """
        CREATE TABLE media (key BLOB PRIMARY KEY, name BLOB, rank INTEGER, claimed INTEGER DEFAULT 0)
            WITHOUT ROWID;
        CREATE TABLE others (key BLOB PRIMARY KEY) WITHOUT ROWID;
    """
    # a file replaces the key's file when its extension ranks earlier (or the same, and its name sorts first)
    _ADD = """
        INSERT INTO media (key, name, rank) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE
        SET name = excluded.name, rank = excluded.rank
        WHERE excluded.rank < media.rank OR (excluded.rank = media.rank AND excluded.name < media.name)
    """

    def __init__(self, folder: Path, names: Iterable[str], extensions: tuple[str, ...]) -> None:
        """`names`: file names in `folder` (any order, streamed), each with one of `extensions`."""
        from bl_data.diskstore import DiskStore

        self.folder = folder
        self.store = DiskStore(self._SCHEMA)
        self.store.write_many(self._ADD, (_ranked(name, extensions) for name in names))
        self._len = self.store.one("SELECT count(*) FROM media")[0]

    def get(self, key: str) -> Path | None:
        row = self.store.one("SELECT name FROM media WHERE key = ?", (os.fsencode(key),))
        return None if row is None else self.folder / os.fsdecode(row[0])

    def claim(self, key: str) -> bool:
        """True the first time a post claims `key` (an importer's duplicate-id check): a flag per media file;
        the keys without one are kept in the store."""
        encoded = os.fsencode(key)
        if self.store.write("UPDATE media SET claimed = 1 WHERE key = ? AND claimed = 0", (encoded,)):
            return True
        if self.store.one("SELECT 1 FROM media WHERE key = ?", (encoded,)) is not None:
            return False  # claimed before
        return self.store.write("INSERT OR IGNORE INTO others VALUES (?)", (encoded,)) == 1

    def __len__(self) -> int:
        return self._len

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> MediaIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ranked(name: str, extensions: tuple[str, ...]) -> tuple[bytes, bytes, int]:
    key, ext = os.path.splitext(name)
    return os.fsencode(key), os.fsencode(name), extensions.index(ext[1:].lower())


def index_media(folder: Path, extensions: tuple[str, ...] = MEDIA_EXTENSIONS) -> MediaIndex:
    """Map `<key>` -> `<folder>/<key>.<ext>` for every file with one of `extensions` directly in `folder`.

    When a key has several media files, the extension earliest in `extensions` wins. yt-dlp's intermediate
    `<id>.f137.mp4` files have the key `<id>.f137` and so never shadow `<id>.mp4`.
    """
    return MediaIndex(folder, media_names(folder, extensions, regular=True), extensions)


def media_names(
    folder: Path, extensions: tuple[str, ...] = MEDIA_EXTENSIONS, regular: bool = False
) -> Iterator[str]:
    """The names of `media_files` (`regular`: of those that are files, after symbolic links), streamed in
    directory order, without building a `Path` each. A folder that is not a directory raises at once."""
    if not folder.is_dir():
        raise NotADirectoryError(f"media folder {folder} is not a directory")
    return _scan(folder, extensions, regular)


def _scan(folder: Path, extensions: tuple[str, ...], regular: bool) -> Iterator[str]:
    with os.scandir(folder) as entries:
        for entry in entries:
            if os.path.splitext(entry.name)[1][1:].lower() in extensions and (not regular or entry.is_file()):
                yield entry.name


def media_files(folder: Path, extensions: tuple[str, ...] = MEDIA_EXTENSIONS) -> list[Path]:
    """Every entry directly in `folder` named `*.<ext>` for one of `extensions` (any case), of any file type,
    sorted: the media files an importer sees (`index_media` uses the regular ones)."""
    return [folder / name for name in sorted(media_names(folder, extensions))]


def file_sha256(path: Path) -> str:
    """sha256 of the file's content (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def attach_media(post: Post, media: MediaIndex, input: str) -> Post | Failure:
    """`post` with `media_path` and `is_video` (from the file's extension) set, or a Failure when it has none."""
    path = media.get(post.id)
    if path is None:
        return failure(input, f"no media file {post.id}.<ext>", post.id, "media")
    post.media_path = path
    post.is_video = path.suffix[1:].lower() in VIDEO_EXTENSIONS
    return post

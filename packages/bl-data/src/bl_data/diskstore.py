"""The driver's per-file / per-post bookkeeping on disk: SQLite in a local temporary directory.

    with DiskSet() as done:
        done.update(listed_keys(out))  # batched in transactions
        "p0001" in done

Millions of media files and posts must not grow the driver's memory: the media ledger, the importers' media
index, the sets of keys (samples written, failures logged, ids seen) and the Reddit importer's comment join
live in SQLite databases, each with a bounded page cache (`CACHE_MIB` unless given), in a directory of their
own under `tempfile.gettempdir()` ($TMPDIR: the driver's local disk, never the output folder, which may be
NFS, where SQLite's locking is unsafe). Nothing needs to survive the process: no journal, no fsync. The
directory is removed by `close` (also when the owner is garbage-collected or the interpreter exits after an
error); only a SIGKILL leaves it behind.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

CACHE_MIB = 1  # page cache per database (a driver has about five)
BATCH = 4096  # rows per `executemany` and writes per transaction


def _discard(db: sqlite3.Connection, folder: str) -> None:
    db.close()
    shutil.rmtree(folder, ignore_errors=True)


class DiskStore:
    """One SQLite database in a fresh local temporary directory; `schema` creates its tables.

    Writes run in transactions of up to `BATCH` writes; reads see them at once. The connection may be used
    from several threads (one at a time: every call holds `lock`). `prefix` and `filename` name the
    directory and the database file (so that a store can be told apart in `$TMPDIR`). An `exclusive` store
    keeps its file locked until it is closed; otherwise other connections may read what was committed (e.g.
    to inspect it)."""

    def __init__(
        self,
        schema: str,
        cache_mib: float | None = None,
        prefix: str = "bl-data-store-",
        filename: str = "store.db",
        exclusive: bool = True,
    ) -> None:
        self.folder = tempfile.mkdtemp(prefix=prefix)
        self.db = sqlite3.connect(
            str(Path(self.folder) / filename), isolation_level=None, check_same_thread=False
        )
        self._closer = weakref.finalize(self, _discard, self.db, self.folder)
        locking = "EXCLUSIVE" if exclusive else "NORMAL"
        for pragma in ("journal_mode=OFF", "synchronous=OFF", f"locking_mode={locking}", "temp_store=FILE"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute(f"PRAGMA cache_size=-{int((cache_mib or CACHE_MIB) * 1024)}")  # negative: KiB
        self.db.executescript(schema)
        self.lock = threading.RLock()
        self._writes = 0
        self.db.execute("BEGIN")

    def write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement; the number of rows it changed."""
        with self.lock:
            changed = self.db.execute(sql, params).rowcount
            self._count(1)
            return changed

    def write_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run `sql` for each of `rows` (any iterable, consumed in batches of `BATCH`)."""
        batch: list[Sequence[Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == BATCH:
                self._flush(sql, batch)
                batch = []
        if batch:
            self._flush(sql, batch)

    def _flush(self, sql: str, batch: list[Sequence[Any]]) -> None:
        with self.lock:
            self.db.executemany(sql, batch)
            self._count(len(batch))

    def _count(self, writes: int) -> None:
        self._writes += writes
        if self._writes >= BATCH:
            self.commit()

    def commit(self) -> None:
        """End the transaction now (another starts at once); `write` and `write_many` commit every `BATCH`."""
        with self.lock:
            self.db.execute("COMMIT")
            self.db.execute("BEGIN")
            self._writes = 0

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of a query, None when it has none."""
        with self.lock:
            return self.db.execute(sql, params).fetchone()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.lock:
            return self.db.execute(sql, params).fetchall()

    def scan(self, sql: str, params: Sequence[Any] = (), size: int | None = None) -> Iterator[list[Any]]:
        """The rows of one run of `sql`, fetched lazily in lists of up to `size` (default `BATCH`). The caller
        may write between lists; whether the scan sees those writes is SQLite's choice: write other tables."""
        with self.lock:
            cursor = self.db.execute(sql, params)
        while True:
            with self.lock:
                page = cursor.fetchmany(size or BATCH)
            if not page:
                return
            yield page

    def pages(self, sql: str, params: Sequence[Any] = (), size: int | None = None) -> Iterator[list[Any]]:
        """The rows of `sql` in lists of up to `size` (default `BATCH`); `sql` selects a BLOB key first and ends in
        `... key > ? ORDER BY key LIMIT ?` (the last key seen and `size` follow `params`), so the caller may
        update the table between pages."""
        last: Any = b""
        while page := self.rows(sql, (*params, last, size or BATCH)):
            yield page
            last = page[-1][0]

    def close(self) -> None:
        """Drop the database and its directory (idempotent)."""
        self._closer()

    def __enter__(self) -> DiskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DiskSet:
    """A set of strings or ints on disk: `add`, `update`, `in`, `len`."""

    def __init__(self, items: Iterable[str | int] = ()) -> None:
        self.store = DiskStore("CREATE TABLE items (item PRIMARY KEY) WITHOUT ROWID;")
        self.update(items)

    def add(self, item: str | int) -> bool:
        """Add `item`; True when it was not in the set yet."""
        return self.store.write("INSERT OR IGNORE INTO items VALUES (?)", (item,)) == 1

    def update(self, items: Iterable[str | int]) -> None:
        self.store.write_many("INSERT OR IGNORE INTO items VALUES (?)", ((item,) for item in items))

    def __contains__(self, item: object) -> bool:
        return self.store.one("SELECT 1 FROM items WHERE item = ?", (item,)) is not None

    def __len__(self) -> int:
        return self.store.one("SELECT count(*) FROM items")[0]

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> DiskSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

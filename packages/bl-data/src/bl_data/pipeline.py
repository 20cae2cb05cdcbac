"""`prepare`: media + engagement logs -> filtered, verbalised BLIFT samples in resumable webdataset shards.

    report = prepare(PrepareConfig(source="youtube", input=Path("dl"), out=Path("shards")))

Posts are imported, filtered (the paper's rules), their media analysed in `workers` processes (scenes,
1 fps frames, keyframes), verbalised (Listing 1 and the Ad-LLaVA control) and written by one shard writer;
the per-post stages are `bl_data.stages`. A rerun skips the samples already in completed shards.

Nothing is lost silently: every media file the importer sees ends written (now or by an earlier run),
dropped by a named rule, assigned to another part, or as a named failure; `report.json` counts each outcome
(they add up to the media files seen) over the whole output folder. Every bad input goes to `failures.jsonl`
once per (input, stage), however often the folder is rerun, and the run goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .asr import AsrSpec, AsrWorker
from .diskstore import DiskSet, DiskStore
from .filters import Dropped, DuplicateMediaRule, FilterReport, Filters, apply_rules, first_posts, hash_media
from .meters import StageMeter, summarize
from .pool import process_posts
from .progress import progress as progress_bar
from .records import Failure, Post
from .shards import ShardWriter, listed_keys, sample_key, shard_paths
from .sources import read_blift, read_reddit, read_youtube
from .sources._common import MEDIA_EXTENSIONS, VIDEO_EXTENSIONS, media_files, media_names, not_regular
from .stages import Captioner, PostResult, StageConfig, exception_reason, filter_post, run_stage

__all__ = ["Captioner", "FailureLog", "MediaLedger", "PrepareConfig", "Run", "media_inputs", "prepare"]

_POST_NOUN = {"youtube": "info.json", "reddit": "submission", "blift": "BLIFT row"}


def part_problem(num_shards: int, shard_index: int) -> str | None:
    """What is wrong with `shard_index` as one of `num_shards` parts, None when nothing."""
    if not 0 <= shard_index < num_shards:
        return f"must be in [0, {num_shards}), got {shard_index}"
    return None


@dataclass(kw_only=True)
class PrepareConfig(StageConfig):
    """`prepare`'s settings; the per-post ones (fps, max_side, tolerances, ...) are `StageConfig`'s."""

    source: Literal["youtube", "reddit", "blift"]
    # youtube: folder of <id>.<ext> + <id>.info.json; reddit/blift: folder with the dumps + media/
    input: Path
    out: Path
    samples_per_shard: int = 64
    workers: int = 1
    # split the posts over machines: this run takes the posts whose id hashes to shard_index
    num_shards: int = 1
    shard_index: int = 0
    asr: AsrSpec | None = None  # the ASR stage (bl-asr serve); None: samples carry no transcript

    def __post_init__(self) -> None:
        if self.asr is not None:
            self.asr_name = self.asr.model
        for name in ("workers", "samples_per_shard", "num_shards", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"PrepareConfig.{name} must be >= 1, got {getattr(self, name)}")
        if problem := part_problem(self.num_shards, self.shard_index):
            raise ValueError(f"PrepareConfig.shard_index {problem}")

    @property
    def prefix(self) -> str:
        """The shard-name prefix of this part: `partNNNN` of several machines' parts, else `blift`."""
        return f"part{self.shard_index:04d}" if self.num_shards > 1 else "blift"

    @property
    def media_dir(self) -> Path:
        """The folder of the media files: the yt-dlp folder itself, else `<input>/media`."""
        return self.input if self.source == "youtube" else self.input / "media"


def _one_dump(folder: Path, patterns: tuple[str, ...], kind: str, *, required: bool) -> Path | None:
    """The Reddit dump of `kind` in `folder`: Pushshift names (RS_/RC_<month>) or Arctic-Shift (*_submissions).

    Entries of any file type count (a named pipe is reported by the reader, never opened)."""
    found = sorted({p for pattern in patterns for p in folder.glob(pattern)})
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ValueError(f"{folder}: several {kind} dumps ({names}); concatenate them into one file first")
    if not found and required:
        raise FileNotFoundError(
            f"{folder}: no {kind} dump (Pushshift RS_*/RC_* or Arctic-Shift *_{kind} NDJSON)"
        )
    return found[0] if found else None


def input_problems(source: str, folder: Path) -> list[str]:
    """Everything `folder` lacks as `source`'s input (a dump, rows, `media/`), or holds twice, before any
    work starts; [] when it can be prepared."""
    if source == "youtube":
        return [] if any(folder.glob("*.info.json")) else ["no yt-dlp <id>.info.json files"]
    problems = []
    if source == "reddit":
        for kind, patterns in _DUMP_PATTERNS.items():
            found = sorted({p.name for pattern in patterns for p in folder.glob(pattern)})
            if len(found) > 1:
                problems.append(f"several {kind} dumps ({', '.join(found)}); concatenate them into one file")
            elif kind == "submissions" and not found:
                problems.append(f"no {kind} dump (Pushshift RS_<month> or Arctic-Shift *_{kind} NDJSON)")
    elif not _blift_rows(folder):
        problems.append("no BLIFT rows (*.parquet, data/train-*.parquet or *.jsonl)")
    if not (folder / "media").is_dir():
        problems.append("no media/ folder (the posts' images and videos, named <id>.<ext>)")
    return problems


_DUMP_PATTERNS = {"submissions": ("RS_*", "*submissions*"), "comments": ("RC_*", "*comments*")}


def _blift_rows(folder: Path) -> list[Path]:
    return sorted([*folder.glob("*.parquet"), *folder.glob("*.jsonl"), *folder.glob("data/*.parquet")])


def _posts(cfg: PrepareConfig) -> Iterator[Post | Failure]:
    if cfg.source == "youtube":
        return read_youtube(cfg.input)
    if cfg.source == "reddit":
        subs = _one_dump(cfg.input, _DUMP_PATTERNS["submissions"], "submissions", required=True)
        comments = _one_dump(cfg.input, _DUMP_PATTERNS["comments"], "comments", required=False)
        return read_reddit(subs, comments, cfg.media_dir)
    rows = _blift_rows(cfg.input)
    if not rows:
        raise FileNotFoundError(f"{cfg.input}: no BLIFT rows (*.parquet, data/train-*.parquet or *.jsonl)")
    return itertools.chain.from_iterable(read_blift(path, cfg.media_dir) for path in rows)


def _import(cfg: PrepareConfig) -> Iterator[Post | Failure]:
    """The importer's items. Arguments that cannot work at all raise before the first item; an exception
    after it ends the import with a Failure naming it, and the posts read so far go on."""
    items = _posts(cfg)
    started = False
    try:
        for item in items:
            started = True
            yield item
    except Exception as err:  # an importer must not take the posts already read down with it
        if not started:
            raise
        yield Failure(str(cfg.input), "import", f"import stopped: {exception_reason(err)}")


def media_inputs(cfg: PrepareConfig) -> list[Path]:
    """The media files the importer of `cfg.source` sees (any file type; see `sources._common.media_files`)."""
    return media_files(cfg.media_dir, _extensions(cfg))


def _extensions(cfg: PrepareConfig) -> tuple[str, ...]:
    return VIDEO_EXTENSIONS if cfg.source == "youtube" else MEDIA_EXTENSIONS


def _in_part(post_id: str, num_shards: int, index: int) -> bool:
    return int.from_bytes(hashlib.sha1(post_id.encode()).digest()[:8], "big") % num_shards == index


class FailureLog:
    """`failures.jsonl` with one line per (input, stage): a rerun appends only failures not yet recorded.

    A last line torn by a kill is dropped when the log is opened. The (input, stage) keys logged are kept on
    disk (`bl_data.diskstore.DiskSet`), the log is read line by line.
    """

    def __init__(self, path: Path) -> None:
        self.keys = DiskSet()
        end = 0
        if path.exists():
            with path.open("rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        break  # torn: dropped below
                    end += len(line)
                    self.keys.update(_logged_key(line))
            if end < path.stat().st_size:
                os.truncate(path, end)
        self.file = path.open("a", encoding="utf-8")

    def add(self, failure: Failure) -> None:
        if not self.keys.add(json.dumps([failure.input, failure.stage])):
            return
        self.file.write(json.dumps(dataclasses.asdict(failure), ensure_ascii=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
        self.keys.close()


def _logged_key(line: bytes) -> list[str]:
    """The (input, stage) key of a logged line, as `FailureLog.keys` holds it; [] for a line without one."""
    try:
        entry = json.loads(line)
        return [json.dumps([entry["input"], entry["stage"]])]
    except (ValueError, KeyError, TypeError):
        return []


class MediaLedger:
    """One outcome per media file: `written`, `already_done`, `other_part`, `dropped:<rule>`, `failed:<stage>`.

    On disk, for 730k files (`bl_data.diskstore`): a row per file (all in one folder) with its name, stem,
    outcome code, `claim` flag (a post with its id was imported) and sha256 (`MediaHashes`); nothing per post
    in memory. A context manager: `close` removes the store."""

    _SCHEMA = """
        CREATE TABLE files (
            name BLOB PRIMARY KEY, stem BLOB, code INTEGER DEFAULT 0, claimed INTEGER DEFAULT 0, digest BLOB
        ) WITHOUT ROWID;
    """

    def __init__(self, folder: Path, names: Iterable[str]) -> None:
        """`names`: the media files' names in `folder` (`media_names`: streamed, any order)."""
        self.folder, self._folder = folder, str(folder)
        self.store = DiskStore(self._SCHEMA)
        rows = ((os.fsencode(name), os.fsencode(os.path.splitext(name)[0])) for name in names)
        self.store.write_many("INSERT OR IGNORE INTO files (name, stem) VALUES (?, ?)", rows)
        self._len = self.store.one("SELECT count(*) FROM files")[0]
        self.kinds: list[str] = [""]  # outcome code -> outcome; 0: none yet
        self.others: dict[str, str] = {}  # outcomes of media outside the folder's files

    def __len__(self) -> int:
        return self._len

    def name(self, media: Path | str) -> bytes | None:
        """The row key of `media` when it is in the folder (whether or not it is one of the files)."""
        head, tail = os.path.split(os.fspath(media))
        if head != self._folder:  # not as written: as `Path` compares (e.g. `dir/./x.mp4`)
            media = Path(media)
            head, tail = (self._folder, media.name) if media.parent == self.folder else (None, "")
        return os.fsencode(tail) if head is not None else None

    def path(self, name: bytes) -> Path:
        return self.folder / os.fsdecode(name)

    def _has(self, name: bytes) -> bool:
        return self.store.one("SELECT 1 FROM files WHERE name = ?", (name,)) is not None

    def record(self, media: Path | str | None, outcome: str) -> None:
        """Set the outcome of `media` unless it already has one (a post without media has none to set)."""
        if media is None:
            return
        if outcome not in self.kinds:
            self.kinds.append(outcome)
        name = self.name(media)
        if name is not None:
            code = self.kinds.index(outcome)
            if self.store.write("UPDATE files SET code = ? WHERE name = ? AND code = 0", (code, name)):
                return
            if self._has(name):
                return  # it has an outcome
        self.others.setdefault(str(media), outcome)

    def claim(self, media: Path | str) -> bool:
        """Mark `media`'s post imported; False when a post already claimed it (ids name their media files, so
        a second claim is a repeated id). Media outside the files are never claimed."""
        name = self.name(media)
        if name is None:
            return True
        if self.store.write("UPDATE files SET claimed = 1 WHERE name = ? AND claimed = 0", (name,)):
            return True
        return not self._has(name)

    def orphans(self) -> Iterator[tuple[Path, bool]]:
        """The files without an outcome, in name order, each with whether a file of the same stem (or media
        outside the files) has one, as it was before the first is yielded: the caller may record as it goes."""
        other_stems = {Path(media).stem for media in self.others}
        self.store.write("CREATE INDEX IF NOT EXISTS by_stem ON files (stem)")
        self.store.write(
            "CREATE TABLE orphans (name BLOB PRIMARY KEY, stem BLOB, used INTEGER) WITHOUT ROWID"
        )
        self.store.write(
            "INSERT INTO orphans SELECT name, stem, EXISTS"
            " (SELECT 1 FROM files AS g WHERE g.stem = f.stem AND g.code != 0) FROM files AS f WHERE code = 0"
        )
        query = "SELECT name, stem, used FROM orphans WHERE name > ? ORDER BY name LIMIT ?"
        for chunk in self.store.pages(query):
            for name, stem, used in chunk:
                yield self.path(name), bool(used) or os.fsdecode(stem) in other_stems
        self.store.write("DROP TABLE orphans")

    def summary(self) -> dict[str, Any]:
        """Counts per outcome: written + already_done + other_part + dropped + failed == files."""
        rows = self.store.rows("SELECT code, count(*) FROM files GROUP BY code")
        counts = Counter({self.kinds[code]: n for code, n in rows if code})
        grouped: dict[str, dict[str, int]] = {"dropped": {}, "failed": {}}
        for outcome, n in sorted(counts.items()):
            kind, _, name = outcome.partition(":")
            if name:
                grouped[kind][name] = n
        return {
            "files": len(self),
            "written": counts["written"],
            "already_done": counts["already_done"],
            "other_part": counts["other_part"],
            **grouped,
        }

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> MediaLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MediaHashes(Mapping[str, str]):
    """`{str(path): sha256 hex}` of the ledger's hashed files, read from its digest column (`DuplicateMediaRule`'s
    `media_hashes`), filled by `hash` in chunks so no dict of every file is ever built."""

    def __init__(self, ledger: MediaLedger) -> None:
        self.ledger = ledger

    def hash(self, hasher: Callable[[list[Path]], dict[str, str]], chunk: int = 4096) -> None:
        ledger = self.ledger
        query = "SELECT name FROM files WHERE name > ? ORDER BY name LIMIT ?"
        for names in ledger.store.pages(query, size=chunk):
            paths = {str(ledger.path(name)): name for (name,) in names}
            digests = hasher([Path(path) for path in paths]).items()
            rows = ((bytes.fromhex(digest), paths[path]) for path, digest in digests)
            ledger.store.write_many("UPDATE files SET digest = ? WHERE name = ?", rows)

    def repeated(self) -> set[str]:
        """The digests that more than one file has (only these need remembering)."""
        query = "SELECT digest FROM files WHERE digest IS NOT NULL GROUP BY digest HAVING count(*) > 1"
        return {row[0].hex() for row in self.ledger.store.rows(query)}

    def __getitem__(self, path: str) -> str:
        name = self.ledger.name(path)
        row = (
            None
            if name is None
            else self.ledger.store.one("SELECT digest FROM files WHERE name = ?", (name,))
        )
        if row is None or row[0] is None:
            raise KeyError(path)
        return row[0].hex()

    def __iter__(self) -> Iterator[str]:
        query = "SELECT name FROM files WHERE digest IS NOT NULL AND name > ? ORDER BY name LIMIT ?"
        return (str(self.ledger.path(name)) for chunk in self.ledger.store.pages(query) for (name,) in chunk)

    def __len__(self) -> int:
        return self.ledger.store.one("SELECT count(*) FROM files WHERE digest IS NOT NULL")[0]


def _orphan(path: Path, cfg: PrepareConfig, used: bool) -> tuple[str, Failure | None]:
    """The outcome of a media file no imported post used, and its Failure when it is one. `used`: another
    file of the same `<id>` has an outcome."""
    if not _in_part(path.stem, cfg.num_shards, cfg.shard_index):
        return "other_part", None
    reason = not_regular(path)
    if reason is None:
        if used:  # `<id>.webm` beside the `<id>.mp4` the post uses
            return "dropped:other_file_same_id", None
        reason = f"no post uses it (no {_POST_NOUN[cfg.source]} with id {path.stem!r} was imported)"
    return "failed:import", Failure(str(path), "import", reason, path.stem, "media")


class Run:
    """What both engines share: the import with the cheap filters, the accounting of every post and media
    file, `failures.jsonl` and `report.json`. An engine feeds `posts()` through the stages and hands each
    `PostResult` back to `account` (after writing it)."""

    def __init__(
        self,
        cfg: PrepareConfig,
        done: Container[str],
        hasher: Callable[[list[Path]], dict[str, str]] | None = None,
    ) -> None:
        """`done`: the keys already written; `hasher`: paths -> {str(path): sha256} of the readable ones
        (default: `hash_media` in `cfg.workers` threads). The ledger and the failure log's keys live on disk
        until `finish` or `close`."""
        self.cfg = cfg
        self.ledger = MediaLedger(cfg.media_dir, media_names(cfg.media_dir, _extensions(cfg)))
        cfg.out.mkdir(parents=True, exist_ok=True)
        self.filters = Filters()
        # media-level dedup over the whole input, hashed in parallel before the split into parts
        hashes = MediaHashes(self.ledger)
        hashes.hash(hasher or (lambda paths: hash_media(paths, cfg.workers)))
        dedupe = next(rule for rule in self.filters.rules if isinstance(rule, DuplicateMediaRule))
        dedupe.media_hashes, dedupe.repeated = hashes, hashes.repeated()
        if cfg.num_shards > 1:
            posts = (item for item in _import(cfg) if isinstance(item, Post))
            dedupe.first = first_posts(posts, Filters().rules, hashes, dedupe.repeated)
        self.counts: Counter[str] = Counter()
        self.done = done
        self.log = FailureLog(cfg.out / "failures.jsonl")

    def fail(self, failure: Failure, media: str | None = None) -> None:
        self.counts[f"failed_{failure.stage}"] += 1
        self.ledger.record(media, f"failed:{failure.stage}")
        self.log.add(failure)

    def posts(self) -> Iterator[Post]:
        """The imported posts of this part that pass the filters and are not done yet."""
        for post in self._candidates():
            kept = filter_post(post, self.filters)
            if self._passed(post, kept):
                yield kept

    def central_posts(self) -> Iterator[tuple[Post, Counter[str]]]:
        """As `posts`, through only the filters that need every post (`Filters.central`, e.g. media dedup):
        each post that passes them, not yet counted, with the comments they removed. The engine runs the rest
        of the rules per post and hands each post's `FilterReport` to `filtered`."""
        head = self.filters.rules[: self.filters.central()]
        for post in self._candidates():
            outcome = run_stage("filter", post, apply_rules, post, head)
            if isinstance(outcome, Failure):
                self._passed(post, outcome)
                continue
            kept, removed = outcome
            if isinstance(kept, Dropped):
                self.filters.report.add(kept, removed)
                self._passed(post, kept)
            else:
                yield kept, removed

    def filtered(self, report: FilterReport) -> None:
        """Count the filters' outcome of a post from `central_posts` (a drop among the later rules is
        counted as kept here, and as the drop when its `PostResult` is accounted)."""
        self.filters.report.merge(report)

    def _candidates(self) -> Iterator[Post]:
        """The imported posts of this part, not done yet and not repeated, before the filters."""
        cfg = self.cfg
        for item in _import(cfg):
            if isinstance(item, Failure):
                self.fail(item)
                continue
            media = item.media_path
            if not _in_part(item.id, cfg.num_shards, cfg.shard_index):
                self.ledger.record(media, "other_part")
                continue
            self.counts["imported"] += 1
            if sample_key(item.id) in self.done:
                self.counts["already_done"] += 1
                self.ledger.record(media, "already_done")
                # its hash must still shadow later copies; a done sample stays done if its file went bad
                run_stage("filter", item, self.filters.remember, item)
                continue
            if not self.ledger.claim(media):
                self.fail(Failure(str(media), "import", "duplicate id", item.id), media)
                continue
            yield item

    def _passed(self, post: Post, kept: Post | Dropped | Failure) -> bool:
        """Record a post's drop or filter failure; True when it passed."""
        if isinstance(kept, Failure):
            self.fail(kept, post.media_path)
        elif isinstance(kept, Dropped):
            self.ledger.record(post.media_path, f"dropped:{kept.rule}")
        return isinstance(kept, Post)

    def account(self, result: PostResult, written: bool = False) -> None:
        """Count a processed post: its failure or drop, or `written` (True once its sample is written)."""
        if result.failure is not None:
            self.fail(result.failure, result.media)
        elif result.dropped is not None:
            self.filters.report.posts_dropped[result.dropped] += 1
            self.filters.report.posts_kept -= 1
            self.ledger.record(result.media, f"dropped:{result.dropped}")
        elif written:
            self.counts["written"] += 1
            self.ledger.record(result.media, "written")

    def close(self) -> None:
        """Close the failure log and remove the on-disk bookkeeping (idempotent; `finish` calls it)."""
        self.log.close()
        self.ledger.close()

    def finish(self, actors: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        """Account the media no post used, close the log and write the report (see `prepare`); `actors`:
        the meter snapshots of the model-holding workers (`bl_data.meters`)."""
        cfg = self.cfg
        for path, used in self.ledger.orphans():
            outcome, failure = _orphan(path, cfg, used)
            if failure is None:
                self.ledger.record(path, outcome)
            else:
                self.fail(failure, str(path))
        with DiskSet(listed_keys(cfg.out)) as samples:
            written = len(samples)
        report = {
            "source": cfg.source,
            "input": str(cfg.input),
            "part": [cfg.shard_index, cfg.num_shards],
            "media": self.ledger.summary(),
            "folder": {
                "samples": written,
                "shards": len(shard_paths(cfg.out)),
                "failures_logged": len(self.log.keys),
            },
            "stages": dict(self.counts),
            "filters": self.filters.report.to_dict(),
            "actors": summarize(list(actors)),
        }
        self.close()
        name = "report.json" if cfg.num_shards == 1 else f"report-{cfg.prefix}.json"
        tmp = cfg.out / f"{name}.tmp"
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, cfg.out / name)
        return report


def prepare(
    cfg: PrepareConfig, captioner: Captioner | None = None, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Run the whole preparation on this machine (the local engine); returns the report (also written to
    `out/report.json`, or `out/report-partNNNN.json` for one of several parts). With `cfg.asr`, one resident
    ASR server transcribes each post's video in a thread beside decoding."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(cfg.out, cfg.samples_per_shard, prefix=cfg.prefix)
    run = Run(cfg, writer.done)
    asr = AsrWorker(cfg.asr, cfg.out / "asr-cache", run.log.add) if cfg.asr is not None else None
    metered = _MeteredCaptioner(captioner) if captioner is not None else None
    posts = asr.feed(run.posts()) if asr is not None else run.posts()
    bar = progress_bar(desc=f"prepare {cfg.source}", unit="post")
    actors: list[dict[str, Any]] = []
    try:
        results = process_posts(
            posts, cfg, workers=cfg.workers, captioner=metered, transcript=asr.text if asr else None
        )
        for result in results:
            bar.update(1)
            if asr is not None:
                asr.forget(result.post_id)
            run.account(result, written=_write(result, writer, run))
            if progress:
                progress(run.counts["written"])
        writer.close()
    except BaseException:
        writer.abort()  # the open shard's samples are simply written again by the next run
        run.close()
        raise
    finally:
        bar.close()
        actors += [asr.close()] if asr is not None else []
    actors += [metered.meter.snapshot()] if metered is not None else []
    return run.finish(actors)


class _MeteredCaptioner:
    """The local engine's captioner (built once by the caller) with its busy time measured."""

    def __init__(self, captioner: Captioner) -> None:
        self.captioner, self.name = captioner, captioner.name
        self.meter = StageMeter("caption", loads=1)  # built once, before the run

    def __call__(self, keyframes: Sequence[np.ndarray]) -> list[tuple[str, list[str]]]:
        with self.meter.busy(posts=1):
            return self.captioner(keyframes)


def _write(result: PostResult, writer: ShardWriter, run: Run) -> bool:
    """Write a processed post's sample; False when there is none or it failed (then counted as failed)."""
    if result.meta is None:
        return False
    try:
        writer.write(result.post_id, result.meta, result.frames)
    except OSError:
        raise  # the shard itself may be damaged: stop (the open shard is discarded)
    except Exception as err:  # members are encoded before the tar is touched: this sample only
        run.fail(Failure(str(result.media), "write", exception_reason(err), result.post_id), result.media)
        return False
    return True

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .asr import AsrSpec, AsrWorker
from .filters import Dropped, DuplicateMediaRule, FilterReport, Filters, apply_rules, first_posts, hash_media
from .meters import StageMeter, summarize
from .pool import process_posts
from .progress import progress as progress_bar
from .records import Failure, Post
from .shards import ShardWriter, done_keys, sample_key, shard_paths
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

    A last line torn by a kill is dropped when the log is opened.
    """

    def __init__(self, path: Path) -> None:
        data = path.read_bytes() if path.exists() else b""
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        self.keys: set[tuple[str, str]] = set()
        for line in data.splitlines():
            try:
                entry = json.loads(line)
                self.keys.add((entry["input"], entry["stage"]))
            except (ValueError, KeyError, TypeError):
                continue
        self.file = path.open("a", encoding="utf-8")

    def add(self, failure: Failure) -> None:
        key = (failure.input, failure.stage)
        if key in self.keys:
            return
        self.keys.add(key)
        self.file.write(json.dumps(dataclasses.asdict(failure), ensure_ascii=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class MediaLedger:
    """One outcome per media file: `written`, `already_done`, `other_part`, `dropped:<rule>`, `failed:<stage>`.

    Compact, for 730k files: the files (all in one folder) are one sorted array of their names, and each has
    a 1-byte outcome code, a 1-byte `claim` flag (a post with its id was imported) and its sha256 (32 bytes,
    `MediaHashes`); about 34 bytes plus its name per file, nothing per post."""

    def __init__(self, folder: Path, names: list[str]) -> None:
        """`names`: the media files' names in `folder`, sorted (`media_names`)."""
        self.folder = folder
        self.names = np.array([os.fsencode(name) for name in names], dtype=bytes)  # (n,) S<len>
        self.codes = np.zeros(len(names), np.uint8)  # index into `kinds`; 0: no outcome yet
        self.claimed = np.zeros(len(names), bool)
        self.digests = np.zeros((len(names), 32), np.uint8)  # (n, 32) sha256, of the rows in `hashed`
        self.hashed = np.zeros(len(names), bool)
        self.kinds: list[str] = [""]
        self.others: dict[str, str] = {}  # outcomes of media outside the folder's files

    def __len__(self) -> int:
        return len(self.names)

    def path(self, i: int) -> Path:
        return self.folder / os.fsdecode(self.names[i])

    @property
    def files(self) -> list[Path]:
        return [self.path(i) for i in range(len(self))]

    def index(self, media: Path | str) -> int | None:
        """The row of `media` among the files, None when it is not one of them."""
        media = Path(media)
        if media.parent != self.folder:
            return None
        name = os.fsencode(media.name)
        i = int(np.searchsorted(self.names, name))
        return i if i < len(self) and self.names[i] == name else None

    def record(self, media: Path | str | None, outcome: str) -> None:
        """Set the outcome of `media` unless it already has one (a post without media has none to set)."""
        if media is None:
            return
        i = self.index(media)
        if i is None:
            self.others.setdefault(str(media), outcome)
        elif not self.codes[i]:
            if outcome not in self.kinds:
                self.kinds.append(outcome)
            self.codes[i] = self.kinds.index(outcome)

    def claim(self, media: Path | str) -> bool:
        """Mark `media`'s post imported; False when a post already claimed it (ids name their media files, so
        a second claim is a repeated id). Media outside the files are never claimed."""
        i = self.index(media)
        if i is None:
            return True
        first = not self.claimed[i]
        self.claimed[i] = True
        return first

    def unaccounted(self) -> list[Path]:
        return [self.path(int(i)) for i in np.flatnonzero(self.codes == 0)]

    def used_stems(self, stems: set[str]) -> set[str]:
        """Those of `stems` (file names without the extension) of which some file has an outcome."""
        named = [Path(os.fsdecode(self.names[i])).stem for i in np.flatnonzero(self.codes)]
        return {stem for stem in [*named, *(Path(m).stem for m in self.others)] if stem in stems}

    def summary(self) -> dict[str, Any]:
        """Counts per outcome: written + already_done + other_part + dropped + failed == files."""
        bins = np.bincount(self.codes, minlength=len(self.kinds))
        counts = Counter({kind: int(n) for kind, n in zip(self.kinds, bins, strict=True) if kind and n})
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


class MediaHashes(Mapping[str, str]):
    """`{str(path): sha256 hex}` of the ledger's hashed files, read from its digest rows (`DuplicateMediaRule`'s
    `media_hashes`), filled by `hash` in chunks so no dict of every file is ever built."""

    def __init__(self, ledger: MediaLedger) -> None:
        self.ledger = ledger

    def hash(self, hasher: Callable[[list[Path]], dict[str, str]], chunk: int = 4096) -> None:
        ledger = self.ledger
        for start in range(0, len(ledger), chunk):
            paths = [ledger.path(i) for i in range(start, min(start + chunk, len(ledger)))]
            for path, digest in hasher(paths).items():
                i = ledger.index(path)
                ledger.digests[i] = np.frombuffer(bytes.fromhex(digest), np.uint8)
                ledger.hashed[i] = True

    def repeated(self) -> set[str]:
        """The digests that more than one file has (only these need remembering)."""
        rows, counts = np.unique(self.ledger.digests[self.ledger.hashed], axis=0, return_counts=True)
        return {bytes(row).hex() for row in rows[counts > 1]}

    def __getitem__(self, path: str) -> str:
        i = self.ledger.index(path)
        if i is None or not self.ledger.hashed[i]:
            raise KeyError(path)
        return bytes(self.ledger.digests[i]).hex()

    def __iter__(self) -> Iterator[str]:
        return (str(self.ledger.path(int(i))) for i in np.flatnonzero(self.ledger.hashed))

    def __len__(self) -> int:
        return int(self.ledger.hashed.sum())


def _orphan(path: Path, cfg: PrepareConfig, used: set[str]) -> tuple[str, Failure | None]:
    """The outcome of a media file no imported post used, and its Failure when it is one. `used` holds the
    `<id>` of the media files a post used."""
    if not _in_part(path.stem, cfg.num_shards, cfg.shard_index):
        return "other_part", None
    reason = not_regular(path)
    if reason is None:
        if path.stem in used:  # `<id>.webm` beside the `<id>.mp4` the post uses
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
        done: set[str],
        hasher: Callable[[list[Path]], dict[str, str]] | None = None,
    ) -> None:
        """`done`: the keys already written; `hasher`: paths -> {str(path): sha256} of the readable ones
        (default: `hash_media` in `cfg.workers` threads)."""
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

    def finish(self, actors: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        """Account the media no post used, close the log and write the report (see `prepare`); `actors`:
        the meter snapshots of the model-holding workers (`bl_data.meters`)."""
        cfg = self.cfg
        unaccounted = self.ledger.unaccounted()
        used = self.ledger.used_stems({path.stem for path in unaccounted})
        for path in unaccounted:
            outcome, failure = _orphan(path, cfg, used)
            if failure is None:
                self.ledger.record(path, outcome)
            else:
                self.fail(failure, str(path))
        self.log.close()
        report = {
            "source": cfg.source,
            "input": str(cfg.input),
            "part": [cfg.shard_index, cfg.num_shards],
            "media": self.ledger.summary(),
            "folder": {
                "samples": len(done_keys(cfg.out)),
                "shards": len(shard_paths(cfg.out)),
                "failures_logged": len(self.log.keys),
            },
            "stages": dict(self.counts),
            "filters": self.filters.report.to_dict(),
            "actors": summarize(list(actors)),
        }
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
        run.log.close()
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

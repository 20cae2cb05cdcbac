"""`prepare` on Ray Data: the same stage functions as the local engine, one streaming pipeline over a cluster.

    report = prepare_ray(PrepareConfig(source="youtube", input=dl, out=shards), RayConfig(), captioner=factory)

The driver hashes the media (Ray tasks) into its compact ledger (`bl_data.pipeline.MediaLedger`), then a
thread imports the posts while Ray runs: the part and done checks and the rules that need every post
(`Filters.central`: through media dedup) run there, and the posts that pass go to `out/.rayXXXX-spool/`,
`spool_page` per file, each written atomically. One Ray Dataset streams the whole run, every post a block of
its own, from the first page on:

    read       one task per page the import can write (its media files bound the pages), two at a time,
               each waiting for its page (or the import's end) (0.25 CPU)
    decode     CPU tasks of one post (1 CPU): the per-post filters (comment words, near-duplicate comments,
               ...; their counts ride back with the post), `decode_post`, frames JPEG-encoded as
               `ShardWriter` stores them
    caption    an actor pool (`num_gpus` per actor): each actor builds the captioner once, in its constructor,
               and captions the keyframes of `caption_batch` posts per call for the whole run,
               `caption_calls` calls at a time (one in the model, the next unpacking its posts meanwhile)
    asr        an actor pool: each actor keeps one `bl-asr serve` process (the model loaded once), started
               again if it dies (the file it died on fails alone), behind `bl_data.asr`'s per-file cache
    verbalize  CPU tasks of one post: `finish_post`
    write      tasks (0.5 CPU) of up to `samples_per_shard` posts: one atomic shard + manifest line each, under a
               prefix named after the task's first post (so a retried task finds its own shard again)

Ray Data's streaming executor runs the stages together with backpressure between them: there is no barrier,
so a slow post delays only itself. The driver consumes the write tasks' outcomes as they stream back (each
post's result without its sample, its filter counts, and the actors' meters), accounts them as the local
engine does and writes the same `failures.jsonl` and `report.json` (plus each actor's model loads and busy
fraction). What the driver holds in memory does not grow with the posts or media files: one page of posts
while spooling, Ray Data's bounded output queue, the digests that several files share (dedup) and counters.
Its per-file and per-post bookkeeping is on disk (`bl_data.diskstore`: SQLite with a bounded page cache in a
local temporary directory, removed when the run ends): the media ledger (each file's outcome, claim flag and
sha256), the importer's media index, the keys already written (a rerun), the failures logged and the posts
whose outcome is back.

Faults: a task whose worker dies is retried (`max_retries`); a retried write task skips the samples its dead
attempt listed. A post whose task still fails (e.g. one that kills every worker it runs in) is dropped from
the stream alone (`DataContext.max_errored_blocks`); the driver runs the per-post filters on it (a drop or
filter failure counts as such, as in the local engine), and a kept one becomes a `ray` failure that a rerun
retries, unless its write task listed it before dying. A killed driver leaves its completed shards; the next
run discards what its tasks left unlisted. One driver per output folder at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pickle
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bl_data.asr import AsrError, AsrServer, AsrSpec, asr_media, default_command
from bl_data.diskstore import DiskSet
from bl_data.filters import Dropped, FilterReport, Rule, apply_rules
from bl_data.meters import StageMeter
from bl_data.pipeline import PrepareConfig, Run
from bl_data.progress import progress as progress_bar
from bl_data.records import Failure, Post
from bl_data.shards import ShardWriter, encode_jpeg, listed_keys, sample_key
from bl_data.stages import (
    Captioner,
    Decoded,
    PostResult,
    StageConfig,
    caption_post,
    decode_post,
    exception_reason,
    finish_post,
    media_of,
    run_stage,
)

StageHook = Callable[[str, str], None]  # (stage, post id), run in the worker before a post's stage
_PREFIX = r"ray[0-9a-f]+-[0-9a-f]{12}"  # the write tasks' shard prefixes


@dataclass
class RayConfig:
    """Where and how wide `prepare_ray` runs. Pool sizes are (min, max) actors (Ray autoscales between)."""

    address: str | None = None  # a Ray cluster; None: $RAY_ADDRESS, else a local Ray on this machine
    caption_actors: tuple[int, int] = (1, 1)
    caption_gpus: float = 1.0  # GPUs per caption actor (0: caption on CPU)
    caption_batch: int = 8  # posts per caption call (their keyframes go through the model together)
    # calls each caption actor runs at once: one in the model, the others unpacking their posts or packing
    # the results meanwhile, so the model does not wait for that (1: one call at a time)
    caption_calls: int = 2
    asr_actors: tuple[int, int] = (1, 1)
    asr_gpus: float = 0.0  # GPUs per ASR actor (give whisperx one: 1)
    asr_batch: int = 4  # posts per ASR actor call
    spool_page: int = 256  # posts per spool file: what the driver holds at once while spooling
    max_retries: int = 3  # per Ray task whose worker dies (a crash, the OOM killer, a lost node)
    on_stage: StageHook | None = None  # e.g. tracing or fault injection in tests


@dataclass
class _Row:
    """One post on its way through Ray: a terminal `result`, or the `work` still to do."""

    slot: int  # the post's place in the spool
    post_id: str
    media: str | None
    filtered: FilterReport | None = None  # the filters' count of this post (None: a filter failed)
    result: PostResult | None = None
    work: Decoded | None = None
    jpegs: list[bytes] = field(default_factory=list)
    captions: list | Failure | None = None
    captioner: str | None = None
    transcript: str | None = None
    notes: list[Failure] = field(default_factory=list)  # failures logged beside the sample (ASR)
    meters: list[dict[str, Any]] = field(default_factory=list)  # actor meter snapshots riding along


@dataclass
class _Outcome:
    """What a write task reports back per post: the result without its sample, written or not, notes."""

    slot: int
    result: PostResult
    filtered: FilterReport | None
    written: bool
    notes: list[Failure]
    meters: list[dict[str, Any]]


def _load(row: dict[str, Any]) -> _Row:
    return pickle.loads(row["item"])


def _dump(item: _Row) -> dict[str, Any]:
    return {"id": item.post_id, "item": pickle.dumps(item)}


def _batch_rows(batch: dict[str, np.ndarray]) -> list[Any]:
    return [pickle.loads(item) for item in batch["item"]]


def _items_batch(ids: Sequence[str], items: Sequence[Any]) -> dict[str, np.ndarray]:
    column = np.empty(len(items), dtype=object)
    column[:] = [pickle.dumps(item) for item in items]
    return {"id": np.array(ids, dtype=object), "item": column}


def _rows_batch(rows: Sequence[_Row]) -> dict[str, np.ndarray]:
    return _items_batch([row.post_id for row in rows], rows)


def _hook(on_stage: StageHook | None, stage: str, post_id: str) -> None:
    if on_stage is not None:
        on_stage(stage, post_id)


def _read_page(spool: Path, index: int) -> Iterator[Any]:
    """Spool page `index` as one Arrow block per post, once the driver has written it; nothing when the
    import ended with fewer pages."""
    import pyarrow as pa

    page, done = spool / f"page-{index:06d}.pkl", spool / "done"
    while not page.exists():
        if done.exists() and int(done.read_text()) <= index:
            yield pa.table({"id": pa.array([], pa.string()), "item": pa.array([], pa.binary())})
            return
        time.sleep(0.05)
    for slot, post, removed in pickle.loads(page.read_bytes()):
        yield pa.table({"id": [post.id], "item": [pickle.dumps((slot, post, removed))]})


def _spool_source(spool: Path, pages: int) -> Any:
    """A Ray Data Datasource with one read task per spool page the import can write (`pages`, a bound)."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class SpoolSource(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, **_: Any) -> list[ReadTask]:
            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            return [ReadTask(functools.partial(_read_page, spool, i), meta) for i in range(pages)]

    return SpoolSource()


def _filter(
    post: Post, removed: Counter[str], rules: list[Rule]
) -> tuple[Post | PostResult, FilterReport | None]:
    """The per-post filters (those after `Filters.central`): the post, or its drop or failure as a
    `PostResult`; and the filters' count of the post (a drop counted as kept: its `PostResult` is accounted
    as the drop), None when a rule failed (a failed post is not counted, as `Filters`)."""
    outcome = run_stage("filter", post, apply_rules, post, rules)
    if isinstance(outcome, Failure):
        return PostResult(post.id, media_of(post), failure=outcome), None
    kept, more = outcome
    report = FilterReport(posts_in=1, posts_kept=1)
    report.comments_removed.update(+(removed + more))
    if isinstance(kept, Dropped):
        return PostResult(post.id, media_of(post), dropped=kept.rule), report
    return kept, report


def _decode_row(
    row: dict[str, Any], rules: list[Rule], cfg: StageConfig, on_stage: StageHook | None
) -> dict[str, Any]:
    """The decode task: the per-post filters, `decode_post`, and the frames JPEG-encoded as the shard writer
    stores them."""
    slot, post, removed = pickle.loads(row["item"])
    kept, filtered = _filter(post, removed, rules)
    base = {"slot": slot, "post_id": post.id, "media": media_of(post), "filtered": filtered}
    if isinstance(kept, PostResult):
        return _dump(_Row(**base, result=kept))
    _hook(on_stage, "decode", post.id)
    decoded = decode_post(kept, cfg)
    if isinstance(decoded, PostResult):
        return _dump(_Row(**base, result=decoded))
    jpegs = run_stage("media", kept, lambda: [encode_jpeg(f) for f in decoded.analysis.frames])
    if isinstance(jpegs, Failure):
        return _dump(_Row(**base, result=PostResult(post.id, base["media"], failure=jpegs)))
    empty = np.zeros((0, 1, 1, 3), np.uint8)  # (T=0, H, W, 3): the frames travel as `jpegs`
    work = dataclasses.replace(decoded, analysis=dataclasses.replace(decoded.analysis, frames=empty))
    return _dump(_Row(**base, work=work, jpegs=jpegs))


class _CaptionActor:
    """Captions the keyframes of a batch of posts in one call; the captioner is built once, here. Calls may
    run in several threads (`RayConfig.caption_calls`): one at a time in the model, the others unpacking
    their posts or packing their results meanwhile."""

    def __init__(self, factory: Callable[[], Captioner]) -> None:
        self.meter = StageMeter("caption")
        self.model_lock = threading.Lock()  # the captioner and the meter: one call at a time
        with self.meter.loading():
            self.captioner = factory()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: list[_Row] = _batch_rows(batch)
        todo = [row for row in rows if row.work is not None]
        with self.model_lock:
            with self.meter.busy(posts=len(todo)):
                self._caption(todo)
            rows[0].meters.append(self.meter.snapshot())
        return _rows_batch(rows)

    def _caption(self, todo: list[_Row]) -> None:
        keyframes = [kf for row in todo for kf in row.work.analysis.keyframes]
        try:
            captions = self.captioner(keyframes) if keyframes else []
            if len(captions) != len(keyframes):
                raise ValueError(f"{len(captions)} captions for {len(keyframes)} keyframes")
        except Exception:  # caption alone: the post that breaks the captioner gets the Failure
            captions = None
        start = 0
        for row in todo:
            n = len(row.work.analysis.keyframes)
            mine = captions[start : start + n] if captions is not None else None
            row.captions = mine if mine is not None else caption_post(row.work, self.captioner)
            row.captioner = self.captioner.name
            start += n


class _AsrActor:
    """Transcribes the videos of a batch of posts with one resident `bl-asr serve` (started here, once)."""

    def __init__(self, spec: AsrSpec, cache_dir: Path) -> None:
        self.meter = StageMeter("asr")
        self.server = AsrServer(spec, cache_dir)
        try:
            with self.meter.loading():
                self.server.start()
        except AsrError:
            pass  # the server remembers why: each post of this actor fails with that reason

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: list[_Row] = _batch_rows(batch)
        paths = {
            row.post_id: path
            for row in rows
            if row.work is not None and (path := asr_media(row.work.post)) is not None
        }
        with self.meter.busy(posts=len(paths)):
            try:
                results = self.server.transcribe(paths.values())
            except AsrError as err:  # the server cannot run at all: these posts fail (a rerun retries)
                results = None
                reason = str(err).splitlines()[0]
        for row in rows:
            if row.post_id not in paths:
                continue
            if results is None:
                failure = Failure(row.media, "asr", reason, row.post_id)
                row.result, row.work = PostResult(row.post_id, row.media, failure=failure), None
            elif isinstance(result := results[paths[row.post_id]], Failure):
                row.notes.append(result)  # as the local engine: prepared without a transcript
            else:
                row.transcript = result.text or None
        self.meter.loads, self.meter.load_s = self.server.loads, self.server.load_s
        rows[0].meters.append(self.meter.snapshot())
        return _rows_batch(rows)


def _finish_row(row: dict[str, Any], cfg: StageConfig, on_stage: StageHook | None) -> dict[str, Any]:
    """The verbalize task: `finish_post` with the row's captions and transcript."""
    item = _load(row)
    if item.work is None:
        return row
    _hook(on_stage, "verbalize", item.post_id)
    captions = item.captions if item.captions is not None else caption_post(item.work, None)
    result = finish_post(item.work, captions, item.captioner, cfg, item.transcript)
    if result.meta is not None:
        result.frames = None  # the JPEGs in `item.jpegs` are the frames
    item.result, item.work = result, None
    return _dump(item)


def _write_batch(
    batch: dict[str, np.ndarray], out: Path, samples_per_shard: int, token: str, on_stage: StageHook | None
) -> dict[str, np.ndarray]:
    """The write task: its posts' samples in one shard under a prefix named after its first post, so a retry
    (same posts) reopens the same prefix: what the dead attempt left unlisted is discarded, what it listed is
    skipped."""
    rows: list[_Row] = _batch_rows(batch)
    prefix = f"{token}-{hashlib.sha1(rows[0].post_id.encode()).hexdigest()[:12]}"
    writer = ShardWriter(out, samples_per_shard, prefix, done_scope="prefix")
    outcomes = []
    try:
        for row in rows:
            result = row.result or PostResult(row.post_id, row.media, failure=_lost(row, "no result"))
            written = _write(writer, row, result, on_stage)
            outcomes.append(_Outcome(row.slot, result, row.filtered, written, row.notes, row.meters))
            result.meta = None
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return _items_batch([row.post_id for row in rows], outcomes)


def _write(writer: ShardWriter, row: _Row, result: PostResult, on_stage: StageHook | None) -> bool:
    if result.meta is None:
        return False
    _hook(on_stage, "write", row.post_id)
    if writer.is_done(row.post_id):  # listed by an earlier attempt of this task
        return True
    try:
        writer.write(row.post_id, result.meta, row.jpegs)
    except OSError:
        raise  # the shard itself may be damaged: the task fails and is retried
    except Exception as err:  # members are encoded before the tar is touched: this sample only
        result.failure = Failure(str(row.media), "write", exception_reason(err), row.post_id)
        return False
    return True


def _lost(row: _Row | Post, why: str) -> Failure:
    media = row.media if isinstance(row, _Row) else row.media_path
    post_id = row.post_id if isinstance(row, _Row) else row.id
    return Failure(str(media) if media else post_id, "ray", why, post_id)


def _clean(out: Path, prefix_pattern: str = _PREFIX) -> None:
    """Discard temp files and unlisted shards of the Ray write prefixes matching `prefix_pattern`, and the
    spools of earlier drivers."""
    shard_name = re.compile(rf"^({prefix_pattern})-\d{{6}}\.tar(\.tmp)?$")
    prefixes = {m.group(1) for path in out.iterdir() if (m := shard_name.match(path.name))}
    for prefix in sorted(prefixes):
        ShardWriter(out, 1, prefix, done_scope="prefix")  # opening recovers (see shards)


# Under `uv run`, Ray would by default copy the working directory to every worker and rebuild the
# environment there with `uv run` (a minute per new worker on 2 cores); the workers of a cluster whose nodes
# have this workspace installed at the same path (or a shared filesystem) run the driver's Python directly.
# Set RAY_ENABLE_UV_RUN_RUNTIME_ENV=1 to get Ray's propagation back.
UV_RUNTIME_ENV = "RAY_ENABLE_UV_RUN_RUNTIME_ENV"


def _init(address: str | None) -> None:
    os.environ.setdefault(UV_RUNTIME_ENV, "0")  # read when ray is first imported
    import ray

    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", log_to_driver=False)


def _ray_hashes(paths: list[Path], chunk: int = 64) -> dict[str, str]:
    """`hash_media` as Ray tasks over chunks of `chunk` files (the media must be on a shared filesystem)."""
    import ray

    from bl_data.filters import hash_media

    task = ray.remote(num_cpus=1)(hash_media)
    parts = ray.get([task.remote(paths[i : i + chunk], 1) for i in range(0, len(paths), chunk)])
    return {path: digest for part in parts for path, digest in part.items()}


class _Importer(threading.Thread):
    """The driver's import while Ray streams: `Run.central_posts` (import, shard checks, the filters that need
    every post) written to `spool` as pages of `page` (slot, post, removed comments) items, each page atomic
    (`page-NNNNNN.pkl`), then `done` holding the page count (also after an error, kept in `error`). Each step
    of the import holds `lock`, which the driver's accounting of outcomes holds too."""

    def __init__(self, run: Run, spool: Path, page: int, lock: threading.Lock) -> None:
        super().__init__(name="bl-data import", daemon=True)
        self.source, self.spool, self.page, self.lock = run, spool, page, lock
        self.posts = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        pages, buffer = 0, []
        try:
            items = self.source.central_posts()
            while not self.stop.is_set():
                with self.lock:
                    item = next(items, None)
                if item is None:
                    break
                buffer.append((self.posts, *item))
                self.posts += 1
                if len(buffer) == self.page:
                    _write_atomic(self.spool / f"page-{pages:06d}.pkl", pickle.dumps(buffer))
                    pages, buffer = pages + 1, []
            if buffer:
                _write_atomic(self.spool / f"page-{pages:06d}.pkl", pickle.dumps(buffer))
                pages += 1
        except BaseException as err:  # raised by the driver after the stream; the pages written go on
            self.error = err
        finally:
            _write_atomic(self.spool / "done", str(pages).encode())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _spooled(spool: Path) -> Iterator[tuple[int, Post, Counter[str]]]:
    for page in sorted(spool.glob("page-*.pkl")):
        yield from pickle.loads(page.read_bytes())


def prepare_ray(
    cfg: PrepareConfig, rcfg: RayConfig, captioner: Callable[[], Captioner] | None = None
) -> dict[str, Any]:
    """`prepare` on Ray; the same samples, `failures.jsonl` and `report.json` as the local engine.

    `captioner` builds the captioner inside each caption actor (e.g. `functools.partial(VlmCaptioner, path)`);
    `cfg.asr` runs the ASR stage in the ASR actors.
    """
    if cfg.num_shards != 1:
        raise ValueError(
            "the Ray engine prepares the whole input: num_shards must be 1 (Ray splits the work)"
        )
    _init(rcfg.address)
    cfg.out.mkdir(parents=True, exist_ok=True)
    _clean(cfg.out)  # what a killed driver's tasks left
    for old in cfg.out.glob(".ray*-spool"):
        shutil.rmtree(old)
    with DiskSet(listed_keys(cfg.out)) as done:  # the keys already written, on disk
        run = Run(cfg, done, hasher=_ray_hashes)
        try:
            return run.finish(_drive(run, cfg, rcfg, captioner))
        finally:
            run.close()


def _drive(
    run: Run, cfg: PrepareConfig, rcfg: RayConfig, captioner: Callable[[], Captioner] | None
) -> list[dict[str, Any]]:
    """Import into the spool in a thread while Ray streams it; account each outcome as it comes back, then
    the posts whose outcome never did. The actors' latest meter snapshots."""
    token = f"ray{time.time_ns():x}"
    spool = cfg.out / f".{token}-spool"
    spool.mkdir()
    lock = threading.Lock()
    importer = _Importer(run, spool, rcfg.spool_page, lock)
    # every post that reaches the spool has a media file of its own: the files bound the pages
    pages = -(-len(run.ledger) // rcfg.spool_page)
    rules = run.filters.rules[run.filters.central() :]
    returned = DiskSet()  # the slots of the posts whose outcome is back
    meters: dict[str, dict[str, Any]] = {}
    bar = progress_bar(desc=f"prepare {cfg.source} on ray", unit="post")
    importer.start()
    try:
        for outcome in _stream(spool, pages, rules, cfg, rcfg, captioner, token) if pages else ():
            bar.update(1)
            returned.add(outcome.slot)
            with lock:
                _account(run, outcome, meters)
        importer.join()
        if importer.error is not None:
            raise importer.error
        _account_lost(run, spool, returned, rules, rcfg)
    finally:
        importer.stop.set()
        importer.join()
        bar.close()
        returned.close()
        shutil.rmtree(spool, ignore_errors=True)
        _clean(cfg.out, re.escape(token) + r"-[0-9a-f]{12}")
    return list(meters.values())


def _account(run: Run, outcome: _Outcome, meters: dict[str, dict[str, Any]]) -> None:
    """Account one post's outcome as the local engine does; keep the latest meter snapshot of each actor."""
    for note in outcome.notes:
        run.log.add(note)
    for meter in outcome.meters:
        if meter["batches"] >= meters.get(meter["worker"], {}).get("batches", 0):
            meters[meter["worker"]] = meter
    if outcome.filtered is not None:
        run.filtered(outcome.filtered)
    run.account(outcome.result, written=outcome.written)


def _account_lost(run: Run, spool: Path, returned: DiskSet, rules: list[Rule], rcfg: RayConfig) -> None:
    """Account the spooled posts whose outcome never came back as the local engine would, as far as the
    driver can tell: the per-post filters run here (a post they drop or fail is that drop or failure), then a
    kept post is written when a manifest lists it (its write task died after listing it), else a `ray`
    failure."""
    lost = ((post, removed) for slot, post, removed in _spooled(spool) if slot not in returned)
    reason = (
        f"its Ray tasks failed {rcfg.max_retries + 1} times (a worker died each time: crash, OOM, lost node)"
    )
    written: DiskSet | None = None
    for post, removed in lost:
        kept, report = _filter(post, removed, rules)
        if report is not None:
            run.filtered(report)
        if isinstance(kept, PostResult):
            run.account(kept)
            continue
        if written is None:  # read once, and only when a kept post was lost
            written = DiskSet(listed_keys(run.cfg.out))
        if sample_key(post.id) in written:
            run.account(PostResult(post.id, media_of(post)), written=True)
        else:
            run.account(PostResult(post.id, media_of(post), failure=_lost(post, reason)))
    if written is not None:
        written.close()


def _stream(
    spool: Path,
    pages: int,
    rules: list[Rule],
    cfg: PrepareConfig,
    rcfg: RayConfig,
    captioner: Callable[[], Captioner] | None,
    token: str,
) -> Iterator[_Outcome]:
    """Run the pipeline over the spool's pages as the import writes them; each post's outcome as its write
    task finishes."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    settings = {
        "target_max_block_size": 1,  # every post a block of its own: one post per decode / verbalize task
        "max_errored_blocks": -1,  # a post whose task fails past its retries is dropped alone, not the run
        "enable_progress_bars": False,  # the driver's own bar counts posts
        # no per-operator CPU reservations: with them a stage's share of a small cluster can be a single
        # task, and one straggler then holds back every post behind it (backpressure still bounds memory)
        "op_resource_reservation_enabled": False,
    }
    saved = {name: getattr(ctx, name) for name in settings}
    for name, value in settings.items():
        setattr(ctx, name, value)
    try:
        ds = _dataset(_spool_source(spool, pages), rules, cfg, rcfg, captioner, token)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield from _batch_rows(batch)
    finally:
        for name, value in saved.items():
            setattr(ctx, name, value)


def _dataset(
    source: Any,
    rules: list[Rule],
    cfg: PrepareConfig,
    rcfg: RayConfig,
    captioner: Callable[[], Captioner] | None,
    token: str,
) -> Any:
    """The whole run's Ray Data pipeline (lazy; iterating it executes it, streaming)."""
    import ray
    from ray.data import ActorPoolStrategy

    stage_cfg = StageConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(StageConfig)})
    hook = {"on_stage": rcfg.on_stage}
    one_post = {"num_cpus": 1, "max_retries": rcfg.max_retries}
    # two light read tasks at a time: one waiting for the import's next page must not hold the decode CPUs
    ds = ray.data.read_datasource(source, num_cpus=0.25, concurrency=2)
    ds = ds.map(_decode_row, fn_kwargs={"rules": rules, "cfg": stage_cfg, **hook}, **one_post)
    if captioner is not None:
        ds = ds.map_batches(
            _CaptionActor,
            fn_constructor_kwargs={"factory": captioner},
            batch_size=rcfg.caption_batch,
            compute=ActorPoolStrategy(
                min_size=rcfg.caption_actors[0],
                max_size=rcfg.caption_actors[1],
                max_concurrent_calls_per_actor=rcfg.caption_calls,
                enable_true_multi_threading=True,  # `_CaptionActor` holds its model lock itself
            ),
            num_gpus=rcfg.caption_gpus,
            num_cpus=0 if rcfg.caption_gpus else 1,
        )
    if cfg.asr is not None:
        spec = dataclasses.replace(cfg.asr, command=cfg.asr.command or default_command())
        ds = ds.map_batches(
            _AsrActor,
            fn_constructor_kwargs={"spec": spec, "cache_dir": cfg.out / "asr-cache"},
            batch_size=rcfg.asr_batch,
            compute=ActorPoolStrategy(min_size=rcfg.asr_actors[0], max_size=rcfg.asr_actors[1]),
            num_gpus=rcfg.asr_gpus,
        )
    ds = ds.map(_finish_row, fn_kwargs={"cfg": stage_cfg, **hook}, **one_post)
    write_kwargs = {"out": cfg.out, "samples_per_shard": cfg.samples_per_shard, "token": token, **hook}
    # half a CPU (a write is mostly I/O), which also keeps Ray Data from fusing the one-post tasks above
    # into shard-sized write tasks (it fuses only operators with the same resources)
    return ds.map_batches(
        _write_batch,
        fn_kwargs=write_kwargs,
        batch_size=cfg.samples_per_shard,
        num_cpus=0.5,
        max_retries=rcfg.max_retries,
    )

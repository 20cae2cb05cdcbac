"""`prepare` on Ray Data: the same stage functions as the local engine, spread over a Ray cluster.

    report = prepare_ray(PrepareConfig(source="youtube", input=dl, out=shards), RayConfig(), captioner=factory)

The driver imports the posts and runs the cheap filters (`bl_data.pipeline.Run`, as the local engine), skips
the samples already in completed shards and hands the rest to Ray `chunk_size` posts at a time:

    decode     CPU tasks (1 CPU): `decode_post` (probe, scenes, frames, keyframes, the checks); the frames
               are JPEG-encoded there, as `ShardWriter` would, so blocks stay small and samples identical
    caption    an actor pool (`ActorPoolStrategy`, `num_gpus` per actor): the model is built once per actor
               by the `captioner` factory and captions the keyframes of a whole batch of posts in one call
    asr        an actor pool running the bl-asr command (its own environment) on a batch of files, with
               `bl_data.asr`'s per-file cache, so a retried batch costs nothing
    verbalize  CPU tasks: `finish_post`
    write      a Datasink: one `ShardWriter` prefix per write task (atomic tars and a manifest)

Every per-post exception becomes that post's `Failure` inside the stage; a Ray task that dies is retried
(`max_retries`), skipping the samples an earlier attempt already listed; a chunk that still fails runs its
unwritten posts again one at a time, and a post that still fails alone is a `ray` failure (a rerun retries
it). No post vanishes from the report. One driver per output folder at a time.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pickle
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bl_data.asr import AsrError, transcribe
from bl_data.pipeline import PrepareConfig, Run
from bl_data.records import Failure, Post
from bl_data.shards import MANIFEST_SUFFIX, ShardWriter, done_keys, encode_jpeg, sample_key
from bl_data.sources._common import VIDEO_EXTENSIONS
from bl_data.stages import (
    Captioner,
    Decoded,
    PostResult,
    StageConfig,
    caption_post,
    decode_post,
    exception_reason,
    finish_post,
    run_stage,
)

StageHook = Callable[[str, str], None]  # (stage, post id), run in the worker before a post's stage


@dataclass
class RayConfig:
    """Where and how wide `prepare_ray` runs. Pool sizes are (min, max) actors (Ray autoscales between)."""

    address: str | None = None  # a Ray cluster; None: $RAY_ADDRESS, else a local Ray on this machine
    chunk_size: int = 256  # posts handed to Ray at a time (the driver never holds more in flight)
    caption_actors: tuple[int, int] = (1, 1)
    caption_gpus: float = 1.0  # GPUs per caption actor (0: caption on CPU)
    caption_batch: int = 8  # posts per caption call (their keyframes go through the model together)
    asr_actors: tuple[int, int] = (1, 1)
    asr_gpus: float = 0.0  # GPUs per ASR actor (give whisperx one: 1)
    asr_batch: int = 16  # files per bl-asr run (the model is loaded once per run)
    asr_command: list[str] | None = None  # bl-asr's command line; None: no ASR stage
    asr_model: str = "large-v3"
    asr_args: list[str] = field(default_factory=list)
    max_retries: int = 3  # per Ray task whose worker dies (a crash, the OOM killer, a lost node)
    on_stage: StageHook | None = None  # e.g. tracing or fault injection in tests


@dataclass
class _Row:
    """One post on its way through Ray: a terminal `result`, or the `work` still to do."""

    post_id: str
    media: str | None
    result: PostResult | None = None
    work: Decoded | None = None
    jpegs: list[bytes] = field(default_factory=list)
    captions: list | Failure | None = None
    captioner: str | None = None
    transcript: str | None = None
    notes: list[Failure] = field(default_factory=list)  # failures logged beside the sample (ASR)


def _load(row: dict[str, Any]) -> _Row:
    return pickle.loads(row["item"])


def _dump(item: _Row) -> dict[str, Any]:
    return {"id": item.post_id, "item": pickle.dumps(item)}


def _hook(on_stage: StageHook | None, stage: str, post_id: str) -> None:
    if on_stage is not None:
        on_stage(stage, post_id)


def _decode_row(row: dict[str, Any], cfg: StageConfig, on_stage: StageHook | None) -> dict[str, Any]:
    """The decode task: `decode_post`, and the frames JPEG-encoded as the shard writer stores them."""
    post: Post = pickle.loads(row["item"])
    media = str(post.media_path) if post.media_path is not None else None
    _hook(on_stage, "decode", post.id)
    decoded = decode_post(post, cfg)
    if isinstance(decoded, PostResult):
        return _dump(_Row(post.id, media, result=decoded))
    jpegs = run_stage("media", post, lambda: [encode_jpeg(f) for f in decoded.analysis.frames])
    if isinstance(jpegs, Failure):
        return _dump(_Row(post.id, media, result=PostResult(post.id, media, failure=jpegs)))
    empty = np.zeros((0, 1, 1, 3), np.uint8)  # (T=0, H, W, 3): the frames travel as `jpegs`
    work = dataclasses.replace(decoded, analysis=dataclasses.replace(decoded.analysis, frames=empty))
    return _dump(_Row(post.id, media, work=work, jpegs=jpegs))


def _batch_rows(batch: dict[str, np.ndarray]) -> list[_Row]:
    return [pickle.loads(item) for item in batch["item"]]


def _rows_batch(rows: Sequence[_Row]) -> dict[str, np.ndarray]:
    items = np.empty(len(rows), dtype=object)
    items[:] = [pickle.dumps(row) for row in rows]
    return {"id": np.array([row.post_id for row in rows], dtype=object), "item": items}


class _CaptionActor:
    """Captions the keyframes of a batch of posts in one call; the model is built once per actor."""

    def __init__(self, factory: Callable[[], Captioner]) -> None:
        self.captioner = factory()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = _batch_rows(batch)
        todo = [row for row in rows if row.work is not None]
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
        return _rows_batch(rows)


def asr_media(row: _Row) -> Path | None:
    """The media file the ASR stage transcribes for a post: a video, not a GIF (as `transcribe_folder`)."""
    if row.work is None or not row.work.post.is_video or row.media is None:
        return None
    path = Path(row.media)
    return path if path.suffix.lower().lstrip(".") in set(VIDEO_EXTENSIONS) - {"gif"} else None


class _AsrActor:
    """Runs the bl-asr command on the videos of a batch of posts (its per-file cache skips done files)."""

    def __init__(self, command: list[str], model: str, args: list[str], cache_dir: Path) -> None:
        self.command, self.model, self.args, self.cache_dir = command, model, args, cache_dir

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = _batch_rows(batch)
        paths = {row.post_id: path for row in rows if (path := asr_media(row)) is not None}
        try:
            results = transcribe(
                list(paths.values()),
                model=self.model,
                cache_dir=self.cache_dir,
                command=self.command,
                args=self.args,
            )
        except AsrError as err:  # the command failed as a whole: these posts fail (a rerun retries)
            for row in rows:
                if row.post_id in paths:
                    failure = Failure(row.media, "asr", str(err).splitlines()[0], row.post_id)
                    row.result, row.work = PostResult(row.post_id, row.media, failure=failure), None
            return _rows_batch(rows)
        for row in rows:
            result = results.get(paths[row.post_id]) if row.post_id in paths else None
            if isinstance(result, Failure):
                row.notes.append(result)  # as the local engine: prepared without a transcript
            elif result is not None:
                row.transcript = result.text or None
        return _rows_batch(rows)


def _finish_row(
    row: dict[str, Any], cfg: StageConfig, asr_name: str | None, on_stage: StageHook | None
) -> dict[str, Any]:
    """The verbalize task: `finish_post` with the row's captions and transcript."""
    item = _load(row)
    if item.work is None:
        return row
    _hook(on_stage, "verbalize", item.post_id)
    transcripts = {item.media: item.transcript} if item.transcript and item.media else {}
    cfg = dataclasses.replace(cfg, transcripts=transcripts, asr_name=asr_name)
    captions = item.captions if item.captions is not None else caption_post(item.work, None)
    result = finish_post(item.work, captions, item.captioner, cfg)
    if result.meta is not None:
        result.frames = None  # the JPEGs in `item.jpegs` are the frames
    item.result, item.work = result, None
    return _dump(item)


def _rows_of(blocks: Iterable[Any]) -> Iterable[_Row]:
    for block in blocks:
        for item in block.column("item").to_pylist():
            yield pickle.loads(item)


@dataclass
class _Outcome:
    """What a write task reports back per post: the result without its sample, written or not, notes."""

    result: PostResult
    written: bool
    notes: list[Failure]


class _ShardSink:
    """A Ray Datasink: each write task writes its rows with a `ShardWriter` of its own prefix.

    A retried task (same prefix) starts by discarding what the dead attempt left unlisted and skips the
    samples it already listed, so nothing is written twice.
    """

    def __init__(self, out: Path, samples_per_shard: int, prefix: str, on_stage: StageHook | None) -> None:
        self.out, self.samples_per_shard, self.prefix, self.on_stage = (
            out,
            samples_per_shard,
            prefix,
            on_stage,
        )
        self.outcomes: list[_Outcome] = []

    # ray.data.Datasink is mixed in by `_sink`, so this module imports without Ray
    def write(self, blocks: Iterable[Any], ctx: Any) -> list[_Outcome]:
        writer = ShardWriter(
            self.out, self.samples_per_shard, f"{self.prefix}-{ctx.task_idx:04d}", done_scope="prefix"
        )
        outcomes = []
        try:
            for row in _rows_of(blocks):
                result = row.result or PostResult(row.post_id, row.media, failure=_lost(row, "no result"))
                outcomes.append(_Outcome(result, self._write(writer, row, result), row.notes))
                result.meta = None
            writer.close()
        except BaseException:
            writer.abort()
            raise
        return outcomes

    def _write(self, writer: ShardWriter, row: _Row, result: PostResult) -> bool:
        if result.meta is None:
            return False
        _hook(self.on_stage, "write", row.post_id)
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

    def on_write_complete(self, write_result: Any) -> None:
        self.outcomes = [o for task in write_result.write_returns for o in task]


def _lost(row: _Row | Post, why: str) -> Failure:
    media = row.media if isinstance(row, _Row) else row.media_path
    post_id = row.post_id if isinstance(row, _Row) else row.id
    return Failure(str(media) if media else post_id, "ray", why, post_id)


def _sink(out: Path, samples_per_shard: int, prefix: str, on_stage: StageHook | None) -> _ShardSink:
    from ray.data import Datasink

    cls = type("ShardSink", (_ShardSink, Datasink), {})
    return cls(out, samples_per_shard, prefix, on_stage)


def _clean(out: Path, prefix_pattern: str) -> None:
    """Discard temp files and unlisted shards of the Ray write prefixes matching `prefix_pattern`."""
    shard_name = re.compile(rf"^({prefix_pattern})-\d{{6}}\.tar(\.tmp)?$")
    prefixes = {m.group(1) for path in out.iterdir() if (m := shard_name.match(path.name))}
    for prefix in sorted(prefixes):
        ShardWriter(out, 1, prefix, done_scope="prefix")  # opening recovers (see shards)


def _chunk_written(out: Path, prefix: str) -> set[str]:
    return {
        key
        for path in out.glob(f"{prefix}-*{MANIFEST_SUFFIX}")
        for line in path.read_text().splitlines()
        if line.endswith("}")
        for key in json.loads(line)["keys"]
    }


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


def prepare_ray(
    cfg: PrepareConfig, rcfg: RayConfig, captioner: Callable[[], Captioner] | None = None
) -> dict[str, Any]:
    """`prepare` on Ray; the same samples, `failures.jsonl` and `report.json` as the local engine.

    `captioner` builds the captioner inside each caption actor (e.g. `functools.partial(VlmCaptioner, path)`).
    """
    if cfg.num_shards != 1:
        raise ValueError(
            "the Ray engine prepares the whole input: num_shards must be 1 (Ray splits the work)"
        )
    _init(rcfg.address)
    import ray

    cfg.out.mkdir(parents=True, exist_ok=True)
    _clean(cfg.out, r"ray[0-9a-f]+-\d{5}-\d{4}")  # what a killed driver's tasks left
    run = Run(cfg, done_keys(cfg.out), hasher=_ray_hashes)
    stage_cfg = StageConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(StageConfig)})
    stage_cfg.transcripts = {}
    token, numbers = f"ray{time.time_ns():x}", itertools.count()

    def run_chunk(chunk: list[Post]) -> dict[str, _Outcome]:
        """The outcome of each post of `chunk`. When the chunk fails past its retries (e.g. a post that kills
        every worker it runs in), its unwritten posts are run again one at a time, so only that post fails."""
        prefix = f"{token}-{next(numbers):05d}"
        sink = _sink(cfg.out, cfg.samples_per_shard, prefix, rcfg.on_stage)
        dataset = _dataset(ray, chunk, stage_cfg, rcfg, cfg.out, captioner, cfg.samples_per_shard)
        try:
            dataset.write_datasink(sink, ray_remote_args={"max_retries": rcfg.max_retries})
        except Exception as err:  # what the chunk listed stays written
            _clean(cfg.out, re.escape(prefix) + r"-\d{4}")
            written = _chunk_written(cfg.out, prefix)
            outcomes = {
                post.id: _Outcome(PostResult(post.id, _media(post)), True, [])
                for post in chunk
                if sample_key(post.id) in written
            }
            rest = [post for post in chunk if post.id not in outcomes]
            if len(chunk) > 1:
                for post in rest:
                    outcomes |= run_chunk([post])
            elif rest:
                reason = f"its Ray tasks failed {rcfg.max_retries + 1} times: {type(err).__name__}: {err}"
                (post,) = rest
                failure = _lost(post, reason.splitlines()[0])
                outcomes[post.id] = _Outcome(PostResult(post.id, _media(post), failure=failure), False, [])
            return outcomes
        return {o.result.post_id: o for o in sink.outcomes}

    posts = iter(run.posts())
    while chunk := list(itertools.islice(posts, rcfg.chunk_size)):
        outcomes = run_chunk(chunk)
        for post in chunk:
            outcome = outcomes.get(post.id)
            if outcome is None:
                run.account(
                    PostResult(post.id, _media(post), failure=_lost(post, "no result came back from Ray"))
                )
                continue
            for note in outcome.notes:
                run.log.add(note)
            run.account(outcome.result, written=outcome.written)
    return run.finish()


def _media(post: Post) -> str | None:
    return str(post.media_path) if post.media_path is not None else None


def _dataset(
    ray: Any,
    chunk: list[Post],
    cfg: StageConfig,
    rcfg: RayConfig,
    out: Path,
    captioner: Callable[[], Captioner] | None,
    samples_per_shard: int,
) -> Any:
    """The Ray Data pipeline of one chunk of posts (lazy; the write executes it)."""
    from ray.data import ActorPoolStrategy

    items = [{"id": post.id, "item": pickle.dumps(post)} for post in chunk]
    retries = {"max_retries": rcfg.max_retries}
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map(_decode_row, fn_kwargs={"cfg": cfg, "on_stage": rcfg.on_stage}, num_cpus=1, **retries)
    if captioner is not None:
        ds = ds.map_batches(
            _CaptionActor,
            fn_constructor_kwargs={"factory": captioner},
            batch_size=rcfg.caption_batch,
            compute=ActorPoolStrategy(min_size=rcfg.caption_actors[0], max_size=rcfg.caption_actors[1]),
            num_gpus=rcfg.caption_gpus,
            num_cpus=0 if rcfg.caption_gpus else 1,
        )
    if rcfg.asr_command:
        ds = ds.map_batches(
            _AsrActor,
            fn_constructor_kwargs={
                "command": rcfg.asr_command,
                "model": rcfg.asr_model,
                "args": rcfg.asr_args,
                "cache_dir": out / "asr-cache",
            },
            batch_size=rcfg.asr_batch,
            compute=ActorPoolStrategy(min_size=rcfg.asr_actors[0], max_size=rcfg.asr_actors[1]),
            num_gpus=rcfg.asr_gpus,
        )
    asr_name = rcfg.asr_model if rcfg.asr_command else None
    fn_kwargs = {"cfg": cfg, "asr_name": asr_name, "on_stage": rcfg.on_stage}
    ds = ds.map(_finish_row, fn_kwargs=fn_kwargs, num_cpus=1, **retries)
    # write tasks of about `samples_per_shard` rows each; a separate operator, so the decode and verbalise
    # tasks above stay one post each (fused into the write they would take a whole shard's posts per task)
    return ds.repartition(-(-len(chunk) // samples_per_shard))

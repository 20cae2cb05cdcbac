"""`prepare`: media + engagement logs -> filtered, verbalised BLIFT samples in resumable webdataset shards.

    report = prepare(PrepareConfig(source="youtube", input=Path("dl"), out=Path("shards")))

Posts are imported, filtered (the paper's rules), their media analysed in `workers` processes (scenes,
1 fps frames, keyframes), verbalised (Listing 1 and the Ad-LLaVA control) and written by one shard writer.
A rerun skips the samples already in completed shards. Every bad input goes to `failures.jsonl` and the
run goes on; `report.json` counts each stage and each filter rule.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from tqdm.auto import tqdm

from .behavior import replay_per_scene
from .filters import Dropped, Filters
from .media import MediaError, analyze_media
from .records import Failure, Post
from .shards import ShardWriter, sample_key
from .sources import read_blift, read_reddit, read_youtube
from .verbalize import describe_scene, verbalize


class Captioner(Protocol):
    """Per-scene captions and tags from keyframes (e.g. a VLM); `name` goes into each sample's provenance."""

    name: str

    def __call__(self, keyframes: Sequence[np.ndarray]) -> list[tuple[str, list[str]]]: ...


@dataclass
class PrepareConfig:
    source: Literal["youtube", "reddit", "blift"]
    input: (
        Path  # youtube: folder of <id>.<ext> + <id>.info.json; reddit/blift: folder with the dumps + media/
    )
    out: Path
    samples_per_shard: int = 64
    workers: int = 1
    num_shards: int = (
        1  # split the posts over machines: this run takes the posts whose id hashes to shard_index
    )
    shard_index: int = 0
    fps: float = 1.0
    max_frames: int = 300
    max_side: int | None = 448  # frames are stored at most this large (the model sees 224 px)
    max_duration: float = 500.0
    transcripts: dict[str, str] = field(default_factory=dict)  # media path -> ASR text (from bl_data.asr)
    asr_name: str | None = None


@dataclass
class _Result:
    post_id: str
    meta: dict[str, Any] | None = None
    frames: np.ndarray | None = None
    failure: Failure | None = None
    dropped: str | None = None  # a filter rule applied after decoding (duration)


def _one_dump(folder: Path, patterns: tuple[str, ...], kind: str, *, required: bool) -> Path | None:
    """The Reddit dump of `kind` in `folder`: Pushshift names (RS_/RC_<month>) or Arctic-Shift (*_submissions)."""
    found = sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ValueError(f"{folder}: several {kind} dumps ({names}); concatenate them into one file first")
    if not found and required:
        raise FileNotFoundError(
            f"{folder}: no {kind} dump (Pushshift RS_*/RC_* or Arctic-Shift *_{kind} NDJSON)"
        )
    return found[0] if found else None


def _posts(cfg: PrepareConfig) -> Iterator[Post | Failure]:
    if cfg.source == "youtube":
        return read_youtube(cfg.input)
    if cfg.source == "reddit":
        subs = _one_dump(cfg.input, ("RS_*", "*submissions*"), "submissions", required=True)
        comments = _one_dump(cfg.input, ("RC_*", "*comments*"), "comments", required=False)
        return read_reddit(subs, comments, cfg.input / "media")
    rows = sorted(
        [*cfg.input.glob("*.parquet"), *cfg.input.glob("*.jsonl"), *cfg.input.glob("data/*.parquet")]
    )
    if not rows:
        raise FileNotFoundError(f"{cfg.input}: no BLIFT rows (*.parquet, data/train-*.parquet or *.jsonl)")
    return itertools.chain.from_iterable(read_blift(path, cfg.input / "media") for path in rows)


def _in_part(post_id: str, num_shards: int, index: int) -> bool:
    return int.from_bytes(hashlib.sha1(post_id.encode()).digest()[:8], "big") % num_shards == index


def process_post(post: Post, cfg: PrepareConfig, captioner: Captioner | None = None) -> _Result:
    """Media analysis and verbalisation of one filtered post (runs in a worker process)."""
    try:
        analysis = analyze_media(
            post.media_path, fps=cfg.fps, max_frames=cfg.max_frames, max_side=cfg.max_side
        )
    except MediaError as err:
        return _Result(post.id, failure=Failure(str(post.media_path), "media", err.reason, post.id))
    info = analysis.info
    if info.is_video and info.duration > cfg.max_duration:
        return _Result(post.id, dropped="max_duration")
    post = dataclasses.replace(post, duration=post.duration or info.duration, is_video=info.is_video)
    captions = captioner(analysis.keyframes) if captioner else [(None, [])] * len(analysis.keyframes)
    scenes = [
        describe_scene(kf, caption=c, tags=tags)
        for kf, (c, tags) in zip(analysis.keyframes, captions, strict=True)
    ]
    replay = replay_per_scene(post.heatmap, analysis.scenes) if info.is_video else None
    asr = cfg.transcripts.get(str(post.media_path)) or None
    provenance = {
        "captioner": captioner.name if captioner else None,
        "asr_model": cfg.asr_name if asr else None,
    }
    try:
        sample = verbalize(post, scenes, replay=replay, asr=asr, provenance=provenance)
        control = verbalize(post, scenes, replay=replay, asr=asr, with_behavior=False, provenance=provenance)
    except ValueError as err:
        return _Result(post.id, failure=Failure(str(post.media_path), "verbalize", str(err), post.id))
    meta = sample.to_json() | {
        "control_conversations": control.conversation()["conversations"],
        "source": post.source,
        "url": post.url,
        "scenes": [[s.start, s.end] for s in analysis.scenes],
        "frame_timestamps": analysis.timestamps.round(3).tolist(),
    }
    return _Result(post.id, meta=meta, frames=analysis.frames)


def _work(args: tuple[Post, PrepareConfig]) -> _Result:
    return process_post(*args)


def prepare(
    cfg: PrepareConfig, captioner: Captioner | None = None, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Run the whole preparation; returns the report (also written to `out/report.json`)."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    filters = Filters()
    counts: Counter[str] = Counter()
    failures = (cfg.out / "failures.jsonl").open("a", encoding="utf-8")
    prefix = f"part{cfg.shard_index:04d}" if cfg.num_shards > 1 else "blift"
    writer = ShardWriter(cfg.out, cfg.samples_per_shard, prefix=prefix)
    seen: set[str] = set()

    def todo() -> Iterator[tuple[Post, PrepareConfig]]:
        for item in _posts(cfg):
            if isinstance(item, Failure):
                counts["failed_import"] += 1
                failures.write(json.dumps(dataclasses.asdict(item)) + "\n")
                continue
            if not _in_part(item.id, cfg.num_shards, cfg.shard_index):
                continue
            counts["imported"] += 1
            if writer.is_done(item.id):
                counts["already_done"] += 1
                continue
            if sample_key(item.id) in seen:
                counts["failed_import"] += 1
                failures.write(
                    json.dumps(
                        dataclasses.asdict(Failure(str(item.media_path), "import", "duplicate id", item.id))
                    )
                    + "\n"
                )
                continue
            seen.add(sample_key(item.id))
            kept = filters(item)
            if isinstance(kept, Dropped):
                continue
            yield kept, cfg

    bar = tqdm(desc=f"prepare {cfg.source}", unit="post", dynamic_ncols=True)
    pool = (
        multiprocessing.get_context("spawn").Pool(cfg.workers)
        if cfg.workers > 1 and captioner is None
        else None
    )
    try:
        results = (
            pool.imap(_work, todo(), chunksize=1)
            if pool
            else (process_post(p, c, captioner) for p, c in todo())
        )
        for result in results:
            bar.update(1)
            if result.failure is not None:
                counts["failed_media"] += 1
                failures.write(json.dumps(dataclasses.asdict(result.failure)) + "\n")
                failures.flush()
            elif result.dropped is not None:
                filters.report.posts_dropped[result.dropped] += 1
                filters.report.posts_kept -= 1
            else:
                writer.write(result.post_id, result.meta, result.frames)
                counts["written"] += 1
            if progress:
                progress(counts["written"])
        writer.close()
    finally:
        bar.close()
        if pool:
            pool.terminate()
        failures.close()
    report = {
        "source": cfg.source,
        "input": str(cfg.input),
        "stages": dict(counts),
        "filters": filters.report.to_dict(),
    }
    (cfg.out / f"report-{prefix}.json").write_text(json.dumps(report, indent=2))
    return report

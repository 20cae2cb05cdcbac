"""webdataset tar shards: a resumable writer and a reader with node/worker splitting and seeded shuffles.

A sample is one post: members `<key>.json` (conversation, metadata, raw behaviour), its frames as
`<key>.000.jpg`, `<key>.001.jpg`, ... in time order, and optionally `<key>.mp4`. Keys contain no dots
(webdataset splits a member name at the first dot): `sample_key` makes one from any id.

Resumability: a shard is written to `<name>.tmp`, then fsynced, renamed to `{prefix}-{index:06d}.tar`,
and only then listed in `{prefix}.manifest.jsonl` (shard name, sample keys, sha256, size). A sample
is done once its shard is listed. Opening a writer discards what a killed run left unlisted (temp
files, renamed shards not yet listed, a torn last manifest line); those samples are simply written
again. So a kill -9 at any point loses nothing that was done and duplicates nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from bl_data.media import sample_frames

MANIFEST_SUFFIX = ".manifest.jsonl"
_FRAME_MEMBER = re.compile(r"^(\d+)\.jpg$")
_KEY_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ShardError(Exception):
    """An inconsistent shard directory (listed shard missing, corrupt manifest line) or a bad member."""


def sample_key(sample_id: str) -> str:
    """A webdataset key for `sample_id`: itself when it is 1-64 of [A-Za-z0-9_-], else a sanitised,
    shortened form plus a hash of the id (so two different ids never share a key)."""
    if _KEY_OK.match(sample_id):
        return sample_id
    digest = hashlib.sha1(sample_id.encode("utf-8")).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', sample_id)[:48]}_{digest}"


def _read_manifest(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The entries of a manifest and whether its last line is torn (a write cut short by a kill)."""
    entries: list[dict[str, Any]] = []
    lines = path.read_bytes().split(b"\n") if path.exists() else []
    torn = bool(lines) and lines[-1] != b""  # every complete entry ends with a newline
    for number, line in enumerate(lines[:-1] if lines else [], start=1):
        try:
            entries.append(json.loads(line))
        except ValueError as exc:
            raise ShardError(f"{path}: line {number} is not valid JSON") from exc
    return entries, torn


def _manifests(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob(f"*{MANIFEST_SUFFIX}"))


def done_keys(out_dir: str | Path) -> set[str]:
    """Keys of every sample in a completed (manifest-listed) shard of `out_dir`, for any prefix."""
    return set(listed_keys(out_dir))


def listed_keys(out_dir: str | Path) -> Iterator[str]:
    """`done_keys` streamed, one manifest at a time (a key listed twice comes twice)."""
    for path in _manifests(Path(out_dir)):
        for entry in _read_manifest(path)[0]:
            yield from entry["keys"]


def shard_paths(out_dir: str | Path) -> list[Path]:
    """The completed shards of `out_dir` (all prefixes), in name order; a listed shard must exist."""
    out_dir = Path(out_dir)
    paths = sorted(
        out_dir / entry["shard"] for path in _manifests(out_dir) for entry in _read_manifest(path)[0]
    )
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ShardError(f"listed in a manifest but missing: {', '.join(missing)}")
    return paths


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes, as `ShardWriter` stores a frame (deterministic for a quality)."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class ShardWriter:
    """Writes samples to `{prefix}-{index:06d}.tar` shards of exactly `samples_per_shard` samples
    (the last one of a run may be shorter), resuming where a previous run of `prefix` stopped.

    Use one writer per prefix at a time (parallel writers take distinct prefixes). As a context
    manager, a clean exit completes the open shard and an exception discards it. `done_scope="prefix"`
    reads only this prefix's manifest for the done samples (a write task of many: the caller skips the
    rest), instead of every manifest in `out_dir`.
    """

    def __init__(
        self,
        out_dir: str | Path,
        samples_per_shard: int,
        prefix: str = "blift",
        *,
        jpeg_quality: int = 90,
        done_scope: Literal["folder", "prefix"] = "folder",
    ):
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", prefix):
            raise ValueError(f"prefix must be [A-Za-z0-9_-]+, got {prefix!r}")
        self.out_dir = Path(out_dir)
        self.samples_per_shard = samples_per_shard
        self.prefix = prefix
        self.jpeg_quality = jpeg_quality
        self.manifest = self.out_dir / f"{prefix}{MANIFEST_SUFFIX}"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        entries = self._recover()
        self.next_index = 1 + max((int(e["shard"][len(prefix) + 1 : -4]) for e in entries), default=-1)
        if done_scope == "prefix":
            self.done = {key for entry in entries for key in entry["keys"]}
        else:
            self.done = done_keys(self.out_dir)
        self._file: io.BufferedWriter | None = None
        self._tar: tarfile.TarFile | None = None
        self._keys: list[str] = []

    def _recover(self) -> list[dict[str, Any]]:
        """Drop what a killed run left half-done; return this prefix's manifest entries."""
        entries, torn = _read_manifest(self.manifest)
        if torn:
            tmp = self.manifest.with_name(self.manifest.name + ".tmp")
            tmp.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in entries))
            os.replace(tmp, self.manifest)
        listed = {e["shard"] for e in entries}
        pattern = re.compile(rf"^{re.escape(self.prefix)}-\d{{6}}\.tar(\.tmp)?$")
        for path in self.out_dir.iterdir():
            if pattern.match(path.name) and path.name not in listed:
                path.unlink()
        return entries

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def is_done(self, sample_id: str) -> bool:
        """Whether the sample is in a completed shard (of any prefix in `out_dir`)."""
        return sample_key(sample_id) in self.done

    def write(
        self,
        sample_id: str,
        meta: dict[str, Any],
        frames: np.ndarray | Sequence[np.ndarray | bytes] = (),
        mp4: bytes | None = None,
    ) -> str:
        """Append one sample; returns its key. `frames` is (T, H, W, 3) uint8 RGB (or T such arrays, or T
        JPEGs as `encode_jpeg` makes them), stored as JPEG `NNN.jpg` members; `meta` is stored as `json`.

        Raises ValueError for a key already written (done or in the open shard).
        """
        key = sample_key(sample_id)
        if key in self.done or key in self._keys:
            raise ValueError(f"duplicate sample key {key!r} (id {sample_id!r})")
        members = {"json": json.dumps(meta, ensure_ascii=False).encode("utf-8")}
        members |= {
            f"{i:03d}.jpg": f if isinstance(f, bytes) else encode_jpeg(np.asarray(f), self.jpeg_quality)
            for i, f in enumerate(frames)
        }
        if mp4 is not None:
            members["mp4"] = bytes(mp4)
        if self._tar is None:
            self._file = self._path(self.next_index, tmp=True).open("wb")
            self._tar = tarfile.TarFile(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mode = len(data), 0o444
            self._tar.addfile(info, io.BytesIO(data))
        self._keys.append(key)
        if len(self._keys) == self.samples_per_shard:
            self._finish_shard()
        return key

    def close(self) -> None:
        """Complete the open shard, if any."""
        if self._tar is not None:
            self._finish_shard()

    def abort(self) -> None:
        """Discard the open shard; its samples are not done."""
        if self._tar is not None:
            self._tar.close()
            self._file.close()
            self._path(self.next_index, tmp=True).unlink()
            self._file, self._tar, self._keys = None, None, []

    def _path(self, index: int, *, tmp: bool = False) -> Path:
        return self.out_dir / f"{self.prefix}-{index:06d}.tar{'.tmp' if tmp else ''}"

    def _finish_shard(self) -> None:
        assert self._tar is not None and self._file is not None
        tmp, final = self._path(self.next_index, tmp=True), self._path(self.next_index)
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        with tmp.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        os.replace(tmp, final)
        _fsync_dir(self.out_dir)  # the rename is durable before the manifest lists the shard
        entry = {"shard": final.name, "keys": self._keys, "sha256": digest, "bytes": final.stat().st_size}
        with self.manifest.open("ab") as f:
            f.write(json.dumps(entry).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.done.update(self._keys)
        self.next_index += 1
        self._file, self._tar, self._keys = None, None, []


def decode_mp4(
    data: bytes, *, fps: float | None = None, max_side: int | None = None, name: str = "<mp4 member>"
) -> tuple[np.ndarray, np.ndarray]:
    """Decode an mp4 member with PyAV: frames (T, H, W, 3) uint8 RGB and timestamps (T,) seconds,
    every frame (`fps=None`) or sampled at `fps` (see `bl_data.media.sample_frames`). A bad video
    raises `MediaError` naming `name`."""
    buffer = io.BytesIO(data)
    buffer.name = name
    return sample_frames(buffer, fps, max_side=max_side)


def _decode_jpeg(data: bytes, name: str) -> np.ndarray:
    try:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except OSError as exc:  # PIL's UnidentifiedImageError and truncated-data errors
        raise ShardError(f"{name}: not a decodable JPEG ({exc})") from exc


def decode_sample(
    sample: dict[str, Any], *, decode_frames: bool = True, decode_video: bool = False
) -> dict[str, Any]:
    """A raw webdataset sample (member extension -> bytes) decoded.

    `json` is parsed; with `decode_frames` the `NNN.jpg` members become `frames`, (T, H, W, 3) uint8 RGB
    in frame order (absent when the sample has none); with `decode_video` the `mp4` member becomes
    `video` (all frames, (T, H, W, 3)) and `video_timestamps` (T,). Other members pass through.
    A member that does not decode raises `ShardError` (or `MediaError`) naming shard and member.
    """
    where = f"{sample.get('__url__', '<shard>')}: {sample['__key__']}"
    out = dict(sample)
    try:
        out["json"] = json.loads(sample["json"])
    except (KeyError, ValueError) as exc:
        raise ShardError(f"{where}.json: missing or not valid JSON") from exc
    if decode_frames:
        names = sorted((int(m.group(1)), k) for k in sample if (m := _FRAME_MEMBER.match(k)))
        if names:
            out["frames"] = np.stack([_decode_jpeg(out.pop(k), f"{where}.{k}") for _, k in names])
    if decode_video and "mp4" in sample:
        out["video"], out["video_timestamps"] = decode_mp4(sample["mp4"], name=f"{where}.mp4")
    return out


@dataclasses.dataclass(frozen=True)
class _Member:
    """Where one tar member's bytes lie."""

    path: Path
    offset: int
    size: int


class ShardIndex:
    """Random access to the samples of shard directories (their completed shards) or single .tar files.

    The tar headers are read once; `self[i]` then reads just sample i's members by offset and decodes them
    with `decode_sample` -> (json dict, frames uint8 (T, H, W, 3), T = 0 when the sample has none).
    """

    def __init__(self, sources: Sequence[str | Path]):
        self.samples: list[tuple[str, dict[str, _Member]]] = []  # (key, member extension -> location)
        for source in map(Path, sources):
            if not source.exists():
                raise ShardError(f"BLIFT shards not found: {source}")
            shards = [source] if source.is_file() else shard_paths(source)
            if not shards:
                raise ShardError(f"no shards listed in {source} (run apps/prepare first)")
            for shard in shards:
                self._index(shard)
        self._positions = {key: i for i, (key, _) in enumerate(self.samples)}

    def _index(self, shard: Path) -> None:
        members: dict[str, dict[str, _Member]] = {}
        try:
            with tarfile.open(shard) as tar:
                for info in tar:
                    key, _, ext = info.name.partition(".")
                    members.setdefault(key, {})[ext] = _Member(shard, info.offset_data, info.size)
        except (tarfile.TarError, OSError) as err:
            raise ShardError(f"shard {shard} is unreadable: {err}") from err
        self.samples += members.items()

    def __len__(self) -> int:
        return len(self.samples)

    def position(self, key: str) -> int:
        """Index of the sample `key`; KeyError naming it when absent."""
        if key not in self._positions:
            raise KeyError(f"no sample {key!r} in these shards")
        return self._positions[key]

    def __getitem__(self, index: int) -> tuple[dict[str, Any], np.ndarray]:
        key, members = self.samples[index]
        raw: dict[str, Any] = {"__key__": key, "__url__": str(next(iter(members.values())).path)}
        for ext, member in members.items():
            with member.path.open("rb") as f:
                f.seek(member.offset)
                raw[ext] = f.read(member.size)
        sample = decode_sample(raw)
        return sample["json"], sample.get("frames", np.zeros((0, 1, 1, 3), np.uint8))


def open_shards(
    urls_or_dir: str | Path | Iterable[str],
    *,
    split_by_node: bool = True,
    split_by_worker: bool = True,
    shuffle_buffer: int = 0,
    seed: int = 0,
    resampled: bool = False,
    decode_frames: bool = True,
    decode_video: bool = False,
) -> Iterable[dict[str, Any]]:
    """A webdataset pipeline over shards yielding decoded samples (see `decode_sample`).

    `urls_or_dir`: a shard directory (its completed shards, from the manifests), a brace pattern
    ("dir/blift-{000000..000009}.tar") or a list of shard paths/URLs. Shards are split by node
    (RANK/WORLD_SIZE or torch.distributed) and by DataLoader worker, so the parts are disjoint and
    together complete. With `shuffle_buffer > 0` the shard order (before splitting, identical on every
    node) and the samples (through that buffer) are shuffled, deterministically for `seed`; each
    further pass over the same pipeline object uses the next epoch's order. `resampled=True` draws
    shards with replacement forever (no epochs; seeded per node and worker, not split).
    """
    import webdataset as wds  # imports torch: only readers pay for it, not the shard writers

    if isinstance(urls_or_dir, str | Path) and Path(urls_or_dir).is_dir():
        urls: Any = [str(p) for p in shard_paths(urls_or_dir)]
        if not urls:
            raise ShardError(f"{urls_or_dir}: no completed shards")
    else:
        urls = str(urls_or_dir) if isinstance(urls_or_dir, str | Path) else list(urls_or_dir)
    if resampled:
        stages: list[Any] = [wds.ResampledShards(urls, seed=seed, deterministic=True)]
    else:
        stages = [wds.SimpleShardList(urls)]
        if shuffle_buffer > 0:
            stages.append(wds.detshuffle(bufsize=1 << 16, initial=1 << 16, seed=seed))
        if split_by_node:
            stages.append(wds.split_by_node)
        if split_by_worker:
            stages.append(wds.split_by_worker)
    stages.append(wds.tarfile_to_samples())
    if shuffle_buffer > 0:
        stages.append(wds.detshuffle(bufsize=shuffle_buffer, initial=shuffle_buffer, seed=seed))
    stages.append(
        wds.map(functools.partial(decode_sample, decode_frames=decode_frames, decode_video=decode_video))
    )
    return wds.DataPipeline(*stages)

"""bl_data.shards: resumable writing (a real kill -9), and reading back with splits, shuffles and decoders."""

import itertools
import json
import os
import signal
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from bl_data.media import MediaError
from bl_data.shards import (
    ShardError,
    ShardIndex,
    ShardWriter,
    decode_mp4,
    decode_sample,
    done_keys,
    open_shards,
    sample_key,
    shard_paths,
)
from bl_data.testing import make_clip

WRITER_PROC = Path(__file__).with_name("shard_writer_proc.py")


def smooth_frames(i: int, count: int = 3) -> np.ndarray:
    """(count, 48, 64, 3) uint8 gradients (JPEG keeps them within a few levels)."""
    y, x = np.mgrid[0:48, 0:64]
    base = np.stack([x * 3, y * 4, np.full_like(x, 20 * i)], -1)
    return np.stack([(base + 10 * t) % 256 for t in range(count)]).astype(np.uint8)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 shards of 3 samples; sample 0 also carries an mp4."""
    out = tmp_path_factory.mktemp("shards")
    clip = make_clip(out.parent / "clip.mp4", size=(64, 48), seconds=1.0, cuts=()).read_bytes()
    with ShardWriter(out, samples_per_shard=3) as writer:
        for i in range(12):
            writer.write(
                f"vid-{i:02d}", {"id": f"vid-{i:02d}", "i": i}, smooth_frames(i), clip if i == 0 else None
            )
    return out


def keys_of(samples) -> list[str]:
    return [s["__key__"] for s in samples]


def all_keys() -> list[str]:
    return [f"vid-{i:02d}" for i in range(12)]


def test_sample_key_sanitises_ids():
    assert sample_key("dQw4w9WgXcQ") == "dQw4w9WgXcQ"
    key = sample_key("t3_abc.mp4/x y")
    assert "." not in key and "/" not in key and key.startswith("t3_abc_mp4_x_y_")
    assert sample_key("a.b") != sample_key("a_b")


def test_writer_layout_and_manifest(shard_dir):
    paths = shard_paths(shard_dir)
    assert [p.name for p in paths] == [f"blift-{i:06d}.tar" for i in range(4)]
    with tarfile.open(paths[0]) as tar:
        names = tar.getnames()
    assert names[:5] == ["vid-00.json", "vid-00.000.jpg", "vid-00.001.jpg", "vid-00.002.jpg", "vid-00.mp4"]
    entries = [json.loads(line) for line in (shard_dir / "blift.manifest.jsonl").read_text().splitlines()]
    assert [e["keys"] for e in entries] == [all_keys()[i : i + 3] for i in range(0, 12, 3)]
    assert done_keys(shard_dir) == set(all_keys())


def test_read_back_everything(shard_dir):
    samples = list(open_shards(shard_dir))
    assert keys_of(samples) == all_keys()
    for i, sample in enumerate(samples):
        assert sample["json"] == {"id": f"vid-{i:02d}", "i": i}
        assert sample["frames"].shape == (3, 48, 64, 3) and sample["frames"].dtype == np.uint8
        error = np.abs(sample["frames"].astype(int) - smooth_frames(i))
        assert error.mean() < 2.0 and error.max() <= 24, (error.mean(), error.max())
    assert "mp4" in samples[0] and "mp4" not in samples[1]


def test_pyav_mp4_decoder(shard_dir):
    sample = next(iter(open_shards(shard_dir, decode_video=True)))
    assert sample["video"].shape == (10, 48, 64, 3)
    np.testing.assert_allclose(sample["video_timestamps"], np.arange(10) / 10)
    frames, times = decode_mp4(sample["mp4"], fps=5.0)
    assert frames.shape == (5, 48, 64, 3) and times.tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])


def test_node_and_worker_splits_are_disjoint_and_complete(shard_dir, monkeypatch):
    parts = []
    for rank, worker in itertools.product(range(2), range(2)):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("WORKER", str(worker))
        monkeypatch.setenv("NUM_WORKERS", "2")
        parts.append(keys_of(open_shards(shard_dir, shuffle_buffer=4, seed=3, decode_frames=False)))
    assert all(len(p) == 3 for p in parts)  # one shard each
    assert sorted(itertools.chain(*parts)) == all_keys()


def test_dataloader_workers_split(shard_dir):
    loader = torch.utils.data.DataLoader(open_shards(shard_dir), batch_size=None, num_workers=2)
    keys = keys_of(loader)
    assert sorted(keys) == all_keys() and len(keys) == 12


def test_shuffle_is_deterministic_for_a_seed(shard_dir):
    def order(seed):
        return keys_of(open_shards(shard_dir, shuffle_buffer=6, seed=seed, decode_frames=False))

    first = order(seed=7)
    assert first == order(seed=7) and sorted(first) == all_keys()
    assert first != all_keys() and first != order(seed=8)
    pipeline = open_shards(shard_dir, shuffle_buffer=6, seed=7, decode_frames=False)
    assert keys_of(pipeline) == first and keys_of(pipeline) != first  # a second pass is the next epoch


def test_resampled_is_endless_and_seeded(shard_dir):
    def draw(seed):
        return keys_of(
            itertools.islice(open_shards(shard_dir, resampled=True, seed=seed, decode_frames=False), 30)
        )

    drawn = draw(seed=1)
    assert len(drawn) == 30 and set(drawn) <= set(all_keys()) and drawn == draw(seed=1)


def test_crash_leftovers_are_discarded(tmp_path):
    with ShardWriter(tmp_path, samples_per_shard=2) as writer:
        for i in range(6):
            writer.write(f"s{i}", {"i": i})
    manifest = tmp_path / "blift.manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    # killed after renaming shard 2 and midway through listing it, and with shard 3 still a temp file
    manifest.write_text(lines[0] + lines[1] + lines[2][:10])
    (tmp_path / "blift-000003.tar.tmp").write_bytes(b"partial")
    writer = ShardWriter(tmp_path, samples_per_shard=2)
    assert done_keys(tmp_path) == {"s0", "s1", "s2", "s3"} and writer.next_index == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "blift-000000.tar",
        "blift-000001.tar",
        "blift.manifest.jsonl",
    ]
    writer.write("s4", {"i": 4})
    with pytest.raises(ValueError, match="duplicate"):
        writer.write("s0", {"i": 0})
    writer.close()
    assert done_keys(tmp_path) == {"s0", "s1", "s2", "s3", "s4"}
    (tmp_path / "blift-000001.tar").unlink()
    with pytest.raises(ShardError, match=r"blift-000001\.tar"):
        shard_paths(tmp_path)


def test_exception_discards_the_open_shard(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path, samples_per_shard=4) as writer:
        writer.write("a", {})
        raise RuntimeError("boom")
    assert done_keys(tmp_path) == set() and not list(tmp_path.glob("*.tar*"))


def _run_writer(out: Path, count: int, kill_after: int | None) -> list[str]:
    """Run the writer process; SIGKILL it right after it reports `kill_after` written samples."""
    args = [sys.executable, str(WRITER_PROC), str(out), str(count), "4", "0.1" if kill_after else "0"]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    written = []
    assert proc.stdout is not None
    for line in proc.stdout:
        written.append(line.strip())
        if len(written) == kill_after:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == (-signal.SIGKILL if kill_after else 0)
    return written


def test_kill_9_and_resume_loses_and_duplicates_nothing(tmp_path):
    """Kill a real writer mid-shard twice, rerun to the end: every sample exactly once."""
    out, count = tmp_path / "out", 30
    first = _run_writer(out, count, kill_after=10)  # shards 0-1 listed, 2 samples in a temp shard
    assert done_keys(out) == {sample_key(i) for i in first[:8]}
    assert (out / "blift-000002.tar.tmp").exists()
    second = _run_writer(out, count, kill_after=5)
    assert second[0] == "post.008"  # the 2 unlisted samples are written again
    _run_writer(out, count, kill_after=None)
    members = Counter()
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            members.update(m.name.split(".", 1)[0] for m in tar.getmembers() if m.name.endswith(".json"))
    expected = {sample_key(f"post.{i:03d}") for i in range(count)}
    assert set(members) == expected and set(members.values()) == {1}
    assert done_keys(out) == expected and not list(out.glob("*.tmp"))
    assert sorted(s["json"]["id"] for s in open_shards(out, decode_frames=False)) == [
        f"post.{i:03d}" for i in range(count)
    ]


def test_parallel_writers_use_prefixes(tmp_path):
    for part in range(2):
        with ShardWriter(tmp_path, samples_per_shard=2, prefix=f"part{part}") as writer:
            for i in range(3):
                writer.write(f"p{part}-{i}", {"part": part})
    assert [p.name for p in shard_paths(tmp_path)] == [
        "part0-000000.tar",
        "part0-000001.tar",
        "part1-000000.tar",
        "part1-000001.tar",
    ]
    assert len(list(open_shards(tmp_path))) == 6 and len(done_keys(tmp_path)) == 6


def test_undecodable_members_name_the_shard(tmp_path):
    with ShardWriter(tmp_path, samples_per_shard=1) as writer:
        writer.write("bad", {}, mp4=b"not an mp4")
    with tarfile.open(tmp_path / "blift-000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    sample = {"__key__": "bad", "__url__": "x.tar", "json": members["bad.json"], "000.jpg": b"junk"}
    with pytest.raises(ShardError, match=r"x\.tar: bad\.000\.jpg: not a decodable JPEG"):
        decode_sample(sample)
    with pytest.raises(MediaError, match=r"blift-000000\.tar: bad\.mp4: corrupt or truncated"):
        next(iter(open_shards(tmp_path, decode_video=True)))


def test_shard_index_reads_samples_by_offset_and_names_bad_shards(tmp_path):
    ramp = np.linspace(0, 255, 16, dtype=np.uint8)  # smooth content, which JPEG keeps
    frames = np.stack(
        [
            np.stack(
                [
                    ramp[None, :].repeat(16, 0),
                    ramp[:, None].repeat(16, 1),
                    128 + 0 * ramp[None, :].repeat(16, 0),
                ],
                -1,
            )
        ]
        * 2
    )
    with ShardWriter(tmp_path / "out", samples_per_shard=2) as writer:
        for i in range(3):
            writer.write(f"s{i}", {"id": f"s{i}", "n": i}, frames[: i % 3])
    index = ShardIndex([tmp_path / "out"])
    assert len(index) == 3 and index.position("s2") == 2
    meta, decoded = index[index.position("s2")]
    assert meta == {"id": "s2", "n": 2} and decoded.shape == (2, 16, 16, 3)
    assert np.abs(decoded.astype(int) - frames).mean() < 8  # JPEG
    assert index[0][1].shape[0] == 0
    with pytest.raises(KeyError, match="s9"):
        index.position("s9")
    with pytest.raises(ShardError, match=r"not found: .*nowhere"):
        ShardIndex([tmp_path / "nowhere"])
    bad = tmp_path / "blift-000000.tar"
    bad.write_bytes(b"this is not a tar archive" * 40)
    with pytest.raises(ShardError, match=r"blift-000000\.tar is unreadable"):
        ShardIndex([bad])

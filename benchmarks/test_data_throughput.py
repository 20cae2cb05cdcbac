"""bl-data throughput on one core: scene detection + 1 fps sampling, and reading shards with JPEG decode.

Media rates are video-seconds per wall-second (`video_seconds_per_second`) and per CPU-second
(`video_seconds_per_cpu_second`, i.e. per core); the target is >= 10x real time per core at 360p.
Clips are synthetic 10 s H.264 (30 fps, a panning texture with grain, 4 shots), plus the real bikes.mp4.
"""

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from scenedetect import AdaptiveDetector, SceneManager, open_video

from bl_data.media import analyze_media, detect_scenes, probe, sample_frames
from bl_data.shards import ShardWriter, open_shards
from bl_data.testing import make_clip

SIZES = {"360p": (640, 360), "720p": (1280, 720)}
ROUNDS = 3


@pytest.fixture(scope="module", autouse=True)
def one_cv2_thread():
    """OpenCV would spread resizes over every core; the rates here are per core."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(threads)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench_clips")
    return {
        name: make_clip(root / f"{name}.mp4", size=size, fps=30, seconds=10.0, cuts=(2.5, 5.0, 7.5), pan=2)
        for name, size in SIZES.items()
    }


def measure(benchmark, fn, video_seconds: float, path: Path):
    """Run `fn` ROUNDS times; record the best wall and CPU rates in `extra_info`; return its result."""
    walls, cpus = [], []

    def timed():
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        return out

    result = benchmark.pedantic(timed, rounds=ROUNDS, iterations=1)
    benchmark.extra_info["video_seconds_per_second"] = round(video_seconds / min(walls), 1)
    benchmark.extra_info["video_seconds_per_cpu_second"] = round(video_seconds / min(cpus), 1)
    benchmark.extra_info["kbit_per_second"] = round(path.stat().st_size * 8 / 1000 / video_seconds)
    return result


@pytest.mark.parametrize("size", SIZES)
def test_scenes_and_1fps_one_pass(benchmark, clips, size):
    """`analyze_media` without keyframes: scene detection + 1 fps frames from one decode pass."""
    result = measure(benchmark, lambda: analyze_media(clips[size], keyframes=False), 10.0, clips[size])
    assert len(result.scenes) == 4 and result.frames.shape[0] == 10
    if size == "360p":
        assert benchmark.extra_info["video_seconds_per_cpu_second"] >= 10  # the target, per core


def test_scenes_1fps_and_keyframes_360p(benchmark, clips):
    """The whole media stage: the pass above plus the keyframe pass."""
    result = measure(benchmark, lambda: analyze_media(clips["360p"]), 10.0, clips["360p"])
    assert len(result.keyframes) == 4


def test_separate_passes_360p(benchmark, clips):
    """Baseline: `detect_scenes` then `sample_frames`, two decode passes."""
    measure(
        benchmark, lambda: (detect_scenes(clips["360p"]), sample_frames(clips["360p"])), 10.0, clips["360p"]
    )


def test_pyscenedetect_scene_manager_360p(benchmark, clips):
    """Baseline: pyscenedetect's own PyAV backend + SceneManager (AdaptiveDetector only, no frames kept)."""

    def run():
        manager = SceneManager()
        manager.add_detector(AdaptiveDetector())
        manager.detect_scenes(open_video(str(clips["360p"]), backend="pyav", suppress_output=True))
        return manager.get_scene_list()

    assert len(measure(benchmark, run, 10.0, clips["360p"])) == 4


def test_real_clip_scenes_and_1fps(benchmark, bikes_mp4):
    """bikes.mp4: real footage, 640x272 at 25 fps, 10 s."""
    duration = probe(bikes_mp4).duration
    result = measure(benchmark, lambda: analyze_media(bikes_mp4, keyframes=False), duration, bikes_mp4)
    assert len(result.scenes) >= 5


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 samples of 8 frames at 640x360 (JPEG quality 90), 8 per shard."""
    out = tmp_path_factory.mktemp("bench_shards")
    y, x = np.mgrid[0:360, 0:640]
    rng = np.random.default_rng(0)
    with ShardWriter(out, samples_per_shard=8) as writer:
        for i in range(32):
            base = np.stack([x // 3 + i, y // 2, (x + y) // 5], -1)
            frames = np.clip(base[None] + rng.integers(-8, 9, (8, 360, 640, 1)), 0, 255).astype(np.uint8)
            writer.write(f"s{i:03d}", {"id": f"s{i:03d}", "conversations": []}, frames)
    return out


def test_shard_read_with_jpeg_decode(benchmark, shard_dir):
    walls = []

    def read_all():
        start = time.perf_counter()
        count = sum(sample["frames"].shape[0] for sample in open_shards(shard_dir))
        walls.append(time.perf_counter() - start)
        return count

    assert benchmark.pedantic(read_all, rounds=ROUNDS, iterations=1) == 32 * 8
    benchmark.extra_info["samples_per_second"] = round(32 / min(walls), 1)
    benchmark.extra_info["frames_per_second"] = round(32 * 8 / min(walls), 1)

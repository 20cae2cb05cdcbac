"""bl-data throughput on one core: scene detection + 1 fps sampling, and reading shards with JPEG decode.

Media rates are video-seconds per wall-second (`video_seconds_per_second`) and per CPU-second
(`video_seconds_per_cpu_second`, i.e. per core); the target is >= 10x real time per core at 360p.
Each clip also has a decode-only row (PyAV, one thread, no conversion): the analysis rows report their
CPU rate as a fraction of it (`of_decode_only`, also printed after the module; never asserted).
Clips are synthetic 10 s H.264 (30 fps, a panning texture with grain, 4 shots), plus the real bikes.mp4.
"""

import time
from pathlib import Path

import av
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
def clips(tmp_path_factory: pytest.TempPathFactory, bikes_mp4: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench_clips")
    synthetic = {
        name: make_clip(root / f"{name}.mp4", size=size, fps=30, seconds=10.0, cuts=(2.5, 5.0, 7.5), pan=2)
        for name, size in SIZES.items()
    }
    return synthetic | {"bikes": bikes_mp4}


CLIPS = [*SIZES, "bikes"]
_CPU_RATES: dict[tuple[str, str], float] = {}  # (clip, work) -> video seconds per CPU second


@pytest.fixture(scope="module", autouse=True)
def print_ratios(request: pytest.FixtureRequest):
    """After the module: each analysis rate as a fraction of the decode-only rate (printed, never asserted)."""
    yield
    lines = [
        f"{clip}: {work} {rate} video s per CPU s = {rate / _CPU_RATES[clip, 'decode only']:.2f} of decode only"
        for (clip, work), rate in _CPU_RATES.items()
        if work != "decode only" and (clip, "decode only") in _CPU_RATES
    ]
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if lines and reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\nmedia analysis / decode only (per CPU second):")
            for line in lines:
                reporter.write_line("  " + line)


def measure(benchmark, fn, video_seconds: float, path: Path, key: tuple[str, str] | None = None):
    """Run `fn` ROUNDS times; record the best wall and CPU rates in `extra_info`; return its result.

    With `key` (clip, work), the CPU rate is kept for the ratio to the decode-only rate of the clip.
    """
    walls, cpus = [], []

    def timed():
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        return out

    result = benchmark.pedantic(timed, rounds=ROUNDS, iterations=1)
    benchmark.extra_info["video_seconds_per_second"] = round(video_seconds / min(walls), 1)
    rate = benchmark.extra_info["video_seconds_per_cpu_second"] = round(video_seconds / min(cpus), 1)
    benchmark.extra_info["kbit_per_second"] = round(path.stat().st_size * 8 / 1000 / video_seconds)
    if key is not None:
        _CPU_RATES[key] = rate
        if key[1] != "decode only" and (key[0], "decode only") in _CPU_RATES:
            benchmark.extra_info["of_decode_only"] = round(rate / _CPU_RATES[key[0], "decode only"], 2)
    return result


def decode_only(path: Path) -> int:
    """PyAV decoding on one thread, no frame conversion: the rate the analysis is compared with."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        stream.codec_context.thread_count = 1
        return sum(1 for _ in container.decode(stream))


@pytest.mark.parametrize("clip", CLIPS)
def test_decode_only(benchmark, clips, clip):
    """The decoder's own rate (first, so the analysis rows below can report their ratio to it)."""
    frames = measure(
        benchmark,
        lambda: decode_only(clips[clip]),
        probe(clips[clip]).duration,
        clips[clip],
        (clip, "decode only"),
    )
    assert frames == probe(clips[clip]).num_frames


@pytest.mark.parametrize("clip", CLIPS)
def test_scenes_and_1fps_one_pass(benchmark, clips, clip):
    """`analyze_media` without keyframes: scene detection + 1 fps frames from one decode pass."""
    path = clips[clip]
    result = measure(
        benchmark,
        lambda: analyze_media(path, keyframes=False),
        probe(path).duration,
        path,
        (clip, "scenes + 1 fps"),
    )
    assert len(result.scenes) == (4 if clip in SIZES else 6) and result.frames.shape[0] == 10
    if clip == "360p":
        assert benchmark.extra_info["video_seconds_per_cpu_second"] >= 10  # the target, per core


@pytest.mark.parametrize("clip", CLIPS)
def test_scenes_1fps_and_keyframes(benchmark, clips, clip):
    """The whole media stage: scenes, 1 fps frames and one keyframe per scene."""
    path = clips[clip]
    result = measure(
        benchmark,
        lambda: analyze_media(path),
        probe(path).duration,
        path,
        (clip, "scenes + 1 fps + keyframes"),
    )
    assert len(result.keyframes) == len(result.scenes)


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

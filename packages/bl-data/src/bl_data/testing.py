"""Synthetic media for tests and benchmarks: H.264 clips with shot cuts at known times, written with PyAV."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

# Saturated, well-separated colours (RGB) so every cut changes hue and luminance.
_PALETTE = np.array(
    [[200, 40, 40], [40, 170, 60], [50, 60, 210], [230, 200, 40], [150, 50, 170], [30, 180, 190]], np.int16
)


def make_clip(
    path: str | Path,
    *,
    size: tuple[int, int] = (320, 180),
    fps: int = 10,
    seconds: float = 6.0,
    cuts: Sequence[float] = (2.0, 4.0),
    audio: bool = False,
    pan: int = 0,
    flicker: int = 0,
    seed: int = 0,
    preset: str = "veryfast",
) -> Path:
    """Write an mp4 of len(cuts) + 1 shots, switching at the frames `round(cut * fps)`.

    Each shot is a solid palette colour plus a fixed random texture (±24) and grain (±4, cycling over 7
    frames), added to all three channels;
    `pan` shifts the texture by that many pixels per frame (camera motion, a realistic decode load).
    `flicker` (< 100) adds ±flicker brightness on alternate frames: a steady frame-to-frame change that
    hides the cuts from AdaptiveDetector (not from ContentDetector). `size` is (width, height). With
    `audio`, a 440 Hz mono AAC track is added. Returns `path`.
    """
    path = Path(path)
    width, height = size
    rng = np.random.default_rng(seed)
    num_frames = round(seconds * fps)
    cut_frames = [round(c * fps) for c in cuts]
    textures = rng.integers(-24, 25, (len(cuts) + 1, height, width), dtype=np.int16)
    grains = rng.integers(-4, 5, (7, height, width), dtype=np.int16)
    # colour + level -> RGB lookup tables: one gather per frame instead of per-channel arithmetic
    luts = np.clip(_PALETTE[:, None, :] + np.arange(-128, 128, dtype=np.int16)[None, :, None], 0, 255)
    luts = luts.astype(np.uint8)  # (colours, 256, 3)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": preset, "crf": "23"}
        sound = container.add_stream("aac", rate=44100, layout="mono") if audio else None
        for i in range(num_frames):
            shot = sum(i >= c for c in cut_frames)
            texture = np.roll(textures[shot], i * pan, axis=1) if pan else textures[shot]
            level = texture + grains[i % len(grains)] + (flicker if i % 2 else -flicker)
            image = np.take(luts[shot % len(luts)], (level + 128).astype(np.uint8), axis=0)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        if sound is not None:
            _write_tone(container, sound, seconds)
    return path


def _write_tone(
    container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float
) -> None:
    rate, chunk = stream.rate, 1024
    total = round(seconds * rate)
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        t = (start + np.arange(n)) / rate
        frame = av.AudioFrame.from_ndarray(
            (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], "fltp", "mono"
        )
        frame.sample_rate, frame.pts = rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())

"""Media decoding with PyAV: probe, scene cuts (pyscenedetect), frames at a fixed rate, scene keyframes.

Every function decodes sequentially, never seeking per frame, single-threaded (the pipeline parallelises
across processes). Frames come back as RGB `uint8` arrays of shape (H, W, 3), stacks as (T, H, W, 3),
upright: a display matrix rotation (phone videos) is applied, so H and W are those displayed (`MediaInfo`
gives the size as coded). Scene detection runs on the frames as coded (the cuts do not depend on it).
An image file (jpg, png, webp, ...) is 1-frame media with one zero-length scene; a video without an
audio track is normal. A bad input raises `MediaError` naming the file and the reason.

`analyze_media` does the probe, scene detection, frame sampling and keyframes in one open and one decode
pass (the fast path the pipeline uses); `detect_scenes` and `sample_frames` run one of them on their own,
also checking the stream as `probe` does.

The modules: `probe` (opening a file, its checked packets and frames), `scenes` (the shared frame score
and pyscenedetect's detectors), `frames` (RGB conversion, sampling, keyframes), `decode` (the pass that
feeds them, and the one-analysis functions); `analyze_media` is here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bl_data.records import Scene

from .decode import (
    _decode_pass,
    _image,
    _open_for_sampling,
    _sampler,
    detect_scenes,
    sample_frames,
    scene_keyframes,
)
from .frames import _HeldKeyframes, _KeyframePicker, _output_size
from .probe import MediaError, MediaInfo, MediaSource, _Video, probe
from .scenes import FALLBACK_THRESHOLD, _SceneCutter
from .scenes import _Clock as _Clock  # re-exported: the tests check these parts against pyscenedetect
from .scenes import _DetectorInput as _DetectorInput
from .scenes import _Score as _Score

__all__ = [
    "FALLBACK_THRESHOLD",
    "MediaAnalysis",
    "MediaError",
    "MediaInfo",
    "MediaSource",
    "analyze_media",
    "detect_scenes",
    "probe",
    "sample_frames",
    "scene_keyframes",
]


@dataclass
class MediaAnalysis:
    """The result of `analyze_media`.

    frames: (T, H, W, 3) uint8 RGB sampled frames, `timestamps` (T,) float64 seconds;
    keyframes: one (H, W, 3) uint8 RGB frame per scene (empty when not requested).
    """

    info: MediaInfo
    scenes: list[Scene]
    frames: np.ndarray
    timestamps: np.ndarray
    keyframes: list[np.ndarray]


_HELD_BYTES = 256 << 20
"""At most this much decoded video is held back for keyframes (~180 frames at 720p, ~80 at 1080p)."""


def analyze_media(
    source: MediaSource,
    *,
    fps: float | None = 1.0,
    max_frames: int | None = None,
    max_side: int | None = None,
    min_scene_len: int | float = 15,
    downscale: str | float = "auto",
    keyframes: bool = True,
) -> MediaAnalysis:
    """Probe, scenes, sampled frames and (optionally) the scene keyframes from one decode pass.

    Same results as `probe`, `detect_scenes`, `sample_frames` and `scene_keyframes` with these
    arguments. A scene's midpoint is known only once the scene has ended, so the decoded frames from
    the earliest possible midpoint on are held back (`_HeldKeyframes`, at most `_HELD_BYTES`); keyframes
    of scenes longer than that allows are picked by a second pass that stops at the last of them.
    """
    video, duration = _open_for_sampling(source, fps, max_frames)
    with video:
        if video.is_image:
            image = _image(video, max_side)
            return MediaAnalysis(
                video.info(), [Scene(0, 0.0, 0.0)], image[None], np.zeros(1), [image] if keyframes else []
            )
        size = _output_size(video.width, video.height, max_side)
        sampler = _sampler(video, duration, fps, max_frames, size)
        cutter = _SceneCutter(video.width, video.height, min_scene_len, downscale)
        held = _HeldKeyframes(cutter.detectors, size, _HELD_BYTES) if keyframes else None
        scenes = cutter.scenes(_decode_pass(video, cutter=cutter, sampler=sampler, held=held))
        info = video.info()
    frames, timestamps = sampler.result()
    if held is None:
        return MediaAnalysis(info, scenes, frames, timestamps, [])
    picked = held.keyframes(scenes, cutter.chosen)
    missing = [i for i, keyframe in enumerate(picked) if keyframe is None]
    if missing:  # frames released before their scene closed: a second pass up to the last of them
        picker = _KeyframePicker([(scenes[i].start + scenes[i].end) / 2 for i in missing], size)
        with _Video(source) as video:
            _decode_pass(video, picker=picker, check=False)
        for i, keyframe in zip(missing, picker.result(), strict=True):
            picked[i] = keyframe
    return MediaAnalysis(info, scenes, frames, timestamps, picked)

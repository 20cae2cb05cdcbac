"""The decode pass that feeds every frame to the analyses, and the one-analysis entry points."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from bl_data.records import Scene

from .frames import _RGB, _HeldKeyframes, _KeyframePicker, _output_size, _Sampler
from .probe import MediaError, MediaSource, _fraction, _Video, probe
from .scenes import _Clock, _SceneCutter

_RUN = 4
"""Frames decoded in a run before the analysis sees them, each analysis step then going over the run: the
code and tables of each stay in the CPU caches over a run (measured: 10-15% less CPU time per video at
360p than taking every frame through every step in turn)."""


def _decode_pass(
    video: _Video,
    *,
    cutter: _SceneCutter | None = None,
    sampler: _Sampler | None = None,
    picker: _KeyframePicker | None = None,
    held: _HeldKeyframes | None = None,
    check: bool = True,
) -> float:
    """Feed every frame of `video` to the given consumers and, with `check`, validate the stream as
    `probe` does (`video.info()`, after the last packet). When only a picker is fed, decoding stops once
    it is done (the remaining packets are demuxed, not decoded, for the check).

    Returns the end time of the video in seconds (last frame time plus one frame duration).
    """
    stream = video.stream
    rate = _fraction(stream.guessed_rate) or _fraction(stream.average_rate) or Fraction(25)
    clock = _Clock(stream, rate)
    last = None
    for run in video.runs(_RUN):
        scores = cutter.scores(run) if cutter is not None else [0.0] * len(run)
        for frame, score in zip(run, scores, strict=True):
            timecode = clock.timecode(frame)
            last = timecode.seconds
            if cutter is not None:
                cuts = cutter.feed(timecode, score)
                if held is not None:
                    held.feed(last, frame, cuts)
            if sampler is not None:
                sampler.feed(last, frame)
            if picker is not None:
                picker.feed(last, frame)
        if picker is not None and picker.done and cutter is None and sampler is None:
            break
    if cutter is not None:
        cuts = cutter.finish()
        if held is not None:
            held.close(cuts)
    if check:
        for _ in video.demux():  # what an early stop left
            pass
        video.info()
    if last is None:
        raise MediaError(video.name, "corrupt or truncated video stream (no decodable frames)")
    return last + float(1 / rate)


def _image(video: _Video, max_side: int | None) -> np.ndarray:
    """The single frame of an image, (H, W, 3) uint8 RGB."""
    frame = next(video.frames(), None)
    if frame is None:
        raise MediaError(video.name, "corrupt image (no decodable frame)")
    return _RGB(_output_size(frame.width, frame.height, max_side))(frame)


def _open_for_sampling(
    source: MediaSource, fps: float | None, max_frames: int | None
) -> tuple[_Video, float]:
    """`source` opened for a decode pass, and the duration a `_Sampler` spreads `max_frames` over: the
    header's, else (a stream without one, when `max_frames` needs it) a `probe`'s, before the pass."""
    video = _Video(source)
    duration = video.declared_duration
    if duration is None and fps is not None and max_frames is not None and not video.is_image:
        video.close()  # a file object is read by one container at a time
        duration = probe(source).duration
        video = _Video(source)
    return video, duration or 0.0


def _sampler(
    video: _Video, duration: float, fps: float | None, max_frames: int | None, size: tuple[int, int]
) -> _Sampler:
    expected = video.stream.frames or 1  # used when every frame is kept (fps=None)
    return _Sampler(None if fps is None else 1.0 / fps, max_frames, duration, size, expected)


def detect_scenes(
    source: MediaSource, *, min_scene_len: int | float = 15, downscale: str | float = "auto"
) -> list[Scene]:
    """Shots as [start, end) seconds covering the whole media.

    AdaptiveDetector with pyscenedetect's defaults; when it finds no cut, ContentDetector(threshold=20);
    when that finds none either, one scene spanning the video. `min_scene_len` is in frames (int) or
    seconds (float); `downscale` is "auto" (about 256 px wide, as pyscenedetect) or a factor (1 = none).
    An image gives one zero-length scene.
    """
    with _Video(source) as video:
        if video.is_image:
            return [Scene(0, 0.0, 0.0)]
        cutter = _SceneCutter(video.width, video.height, min_scene_len, downscale)
        return cutter.scenes(_decode_pass(video, cutter=cutter))


def sample_frames(
    source: MediaSource,
    fps: float | None = 1.0,
    max_frames: int | None = None,
    *,
    max_side: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames at `fps` by one sequential decode: the first frame at or after each k / fps seconds.

    Returns frames (T, H, W, 3) uint8 RGB and their timestamps (T,) float64 seconds. `fps=None` keeps
    every frame. `max_frames` caps T by lowering the rate so the frames stay spread uniformly over the
    whole video (not the first `max_frames`). `max_side` resizes (area) so the longer side is at most
    that many pixels. An image gives one frame at 0 s.
    """
    video, duration = _open_for_sampling(source, fps, max_frames)
    with video:
        if video.is_image:
            return _image(video, max_side)[None], np.zeros(1)
        size = _output_size(video.width, video.height, max_side)
        sampler = _sampler(video, duration, fps, max_frames, size)
        _decode_pass(video, sampler=sampler)
    return sampler.result()


def scene_keyframes(
    source: MediaSource, scenes: list[Scene], *, max_side: int | None = None
) -> list[np.ndarray]:
    """One (H, W, 3) uint8 RGB keyframe per scene: the frame on screen at the scene's midpoint.

    One sequential pass that decodes up to the last midpoint (and demuxes the rest, to check the stream).
    """
    with _Video(source) as video:
        if video.is_image:
            image = _image(video, max_side)
            return [image.copy() for _ in scenes]
        picker = _KeyframePicker(
            [(s.start + s.end) / 2 for s in scenes], _output_size(video.width, video.height, max_side)
        )
        if scenes:
            _decode_pass(video, picker=picker)
    return picker.result()

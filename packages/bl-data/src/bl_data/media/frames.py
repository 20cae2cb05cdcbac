"""Frames as RGB arrays: conversion, sampling at a fixed rate, and scene keyframes."""

from __future__ import annotations

import math
from collections import deque

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from scenedetect import ContentDetector
from scenedetect.common import FrameTimecode

from bl_data.records import Scene

_EPS = 1e-6  # seconds: timestamps from pts are exact fractions; this absorbs float rounding


def _plane(plane: av.video.plane.VideoPlane, channels: int = 1) -> np.ndarray:
    """(height, width) uint8 view of one plane of an 8-bit planar frame, or (height, width, channels) of
    a packed one (rgb24: 3); row padding cut off."""
    rows = np.frombuffer(plane, np.uint8, count=plane.line_size * plane.height)
    rows = rows.reshape(plane.height, plane.line_size)[:, : plane.width * channels]
    return rows.reshape(plane.height, plane.width, channels) if channels > 1 else rows


def _output_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class _RGB:
    """Converts frames to (H, W, 3) uint8 RGB at `size` (width, height), resampling by area, then turned
    upright: a display matrix rotation (a phone video's 90°) is applied in quarter turns.

    One reusable SwsContext: `VideoFrame.to_ndarray` builds a new one per frame, which costs more than
    decoding a 360p frame.
    """

    def __init__(self, size: tuple[int, int]):
        self.size = size
        self.reformatter = VideoReformatter()

    def view(self, frame: av.VideoFrame) -> np.ndarray:
        """The converted frame, upright: a view of a new frame's buffer (no copy)."""
        width, height = self.size
        rgb = self.reformatter.reformat(
            frame, width=width, height=height, format="rgb24", interpolation="AREA", threads=1
        )
        turns = round(frame.rotation / 90) % 4  # display matrix: degrees counterclockwise
        return np.rot90(_plane(rgb.planes[0], 3), turns)

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        return np.array(self.view(frame))


class _Sampler:
    """Keeps the first frame at or after each grid time k * period (each frame at most once).

    With `max_frames`, a video longer than `max_frames` periods gets a coarser grid (duration /
    max_frames) so the frames spread evenly over the whole video; `period=None` keeps every frame.
    The frames are converted straight into the result, allocated for `expected` frames (grown if more).
    """

    def __init__(
        self,
        period: float | None,
        max_frames: int | None,
        duration: float,
        size: tuple[int, int],
        expected: int,
    ):
        if period is not None and max_frames is not None and math.ceil(duration / period - _EPS) > max_frames:
            period = duration / max_frames
        if period is not None:  # grid times in [0, duration)
            expected = math.ceil(duration / period - _EPS)
        self.period = period
        self.max_frames = max_frames
        self.expected = max(1, min(expected, max_frames or expected))
        self.rgb = _RGB(size)
        self.next_time = 0.0
        self.frames: np.ndarray | None = None  # (capacity, H, W, 3), the first `len(times)` kept
        self.times: list[float] = []

    def feed(self, t: float, frame: av.VideoFrame) -> None:
        if self.period is not None and t < self.next_time - _EPS:
            return
        count = len(self.times)
        if self.max_frames is not None and count >= self.max_frames:
            return
        if self.period is not None:
            self.next_time = (math.floor((t + _EPS) / self.period) + 1) * self.period
        rgb = self.rgb.view(frame)
        if self.frames is None:
            self.frames = np.empty((self.expected, *rgb.shape), np.uint8)
        elif count == len(self.frames):
            self.frames = np.concatenate([self.frames, np.empty_like(self.frames)])
        np.copyto(self.frames[count], rgb)
        self.times.append(t)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.frames is None:
            w, h = self.rgb.size
            return np.zeros((0, h, w, 3), np.uint8), np.zeros(0)
        return self.frames[: len(self.times)], np.asarray(self.times, dtype=np.float64)


class _KeyframePicker:
    """The frame on screen at each midpoint: the last frame whose timestamp is <= the midpoint."""

    def __init__(self, midpoints: list[float], size: tuple[int, int]):
        self.midpoints = midpoints
        self.rgb = _RGB(size)
        self.previous: av.VideoFrame | None = None
        self.keyframes: list[np.ndarray] = []

    @property
    def done(self) -> bool:
        return len(self.keyframes) == len(self.midpoints)

    def feed(self, t: float, frame: av.VideoFrame) -> None:
        while not self.done and t > self.midpoints[len(self.keyframes)] + _EPS:
            self.keyframes.append(self.rgb(frame if self.previous is None else self.previous))
        self.previous = frame

    def result(self) -> list[np.ndarray]:
        while not self.done and self.previous is not None:
            self.keyframes.append(self.rgb(self.previous))
        return self.keyframes


class _HeldKeyframes:
    """Scene keyframes picked in the scene pass from decoded frames held back (converted only when picked).

    A detector's cut closes its scene [start, cut); the keyframe is the frame on screen at the midpoint
    (`_KeyframePicker`'s rule). A detector emits a cut at most `event_buffer_length` frames after the
    frame it names, so frames before the earliest midpoint still possible are released as the pass goes.
    When more than `max_bytes` would be held, the oldest frames go and the keyframes that needed them
    come back as None, for a second pass to pick. The fallback detector is followed until the adaptive
    one cuts (from then on its scenes are not used).
    """

    def __init__(self, detectors: list[ContentDetector], size: tuple[int, int], max_bytes: int):
        self.rgb = _RGB(size)
        self.max_bytes = max_bytes
        self.lags = [detector.event_buffer_length + 1 for detector in detectors]
        self.recent: deque[float] = deque(maxlen=max(self.lags))  # times of the latest frames
        self.held: deque[tuple[float, av.VideoFrame]] = deque()
        self.frame_bytes = 0
        self.released = False  # whether held[0] may not be the first frame
        self.active = [True] * len(detectors)
        self.bounds: list[list[float]] = [[] for _ in detectors]  # each detector's cuts so far
        self.picked: list[list[np.ndarray | None]] = [[] for _ in detectors]  # one per closed scene
        self.in_order = True

    def feed(self, t: float, frame: av.VideoFrame, cuts: list[list[FrameTimecode]]) -> None:
        held, recent = self.held, self.recent
        if not self.frame_bytes:
            self.frame_bytes = sum(plane.buffer_size for plane in frame.planes)
        held.append((t, frame))
        recent.append(t)
        if cuts[0] or cuts[1]:
            self._close(cuts, ended=False)
        count = len(recent)
        keep = math.inf  # the earliest midpoint still possible
        for start, lag, active in zip(self._starts(), self.lags, self.active, strict=True):
            if active:
                keep = min(keep, (start + recent[-min(lag, count)]) / 2)
        while len(held) > 1 and (held[1][0] <= keep + _EPS or len(held) * self.frame_bytes > self.max_bytes):
            held.popleft()
            self.released = True

    def close(self, cuts: list[list[FrameTimecode]]) -> None:
        """The detectors' cuts after the last frame."""
        self._close(cuts, ended=True)

    def keyframes(self, scenes: list[Scene], chosen: int) -> list[np.ndarray | None]:
        """One keyframe (or None: not held) per scene of the `chosen` detector's `scenes`."""
        if not self.in_order or [scene.start for scene in scenes[1:]] != self.bounds[chosen]:
            return [None] * len(scenes)
        last = scenes[-1]
        return [*self.picked[chosen], self._pick((last.start + last.end) / 2, ended=True)]

    def _starts(self) -> list[float]:
        return [bounds[-1] if bounds else 0.0 for bounds in self.bounds]

    def _close(self, cuts: list[list[FrameTimecode]], ended: bool) -> None:
        if cuts[0]:
            self.active[1:] = [False] * (len(self.active) - 1)
            self.picked[1:] = [[] for _ in self.picked[1:]]
        for d, (start, emitted) in enumerate(zip(self._starts(), cuts, strict=True)):
            for cut in (round(c.seconds, 6) for c in emitted):
                self.in_order &= cut >= start
                if cut <= start or not self.active[d]:
                    continue
                self.picked[d].append(self._pick((start + cut) / 2, ended))
                self.bounds[d].append(cut)
                start = cut

    def _pick(self, midpoint: float, ended: bool) -> np.ndarray | None:
        """The last held frame at or before `midpoint` (the first frame if none), when it is known."""
        on_screen = [i for i, (t, _) in enumerate(self.held) if t <= midpoint + _EPS]
        if not on_screen:
            return None if self.released or not self.held else self.rgb(self.held[0][1])
        if on_screen[-1] == len(self.held) - 1 and not ended:
            return None  # the next frame, not decoded yet, may still be at or before the midpoint
        return self.rgb(self.held[on_screen[-1]][1])

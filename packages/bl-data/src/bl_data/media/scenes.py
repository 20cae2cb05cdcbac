"""Scene cuts: pyscenedetect's detectors fed one shared frame score, in the same pass as the rest."""

from __future__ import annotations

import itertools
from fractions import Fraction

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter
from scenedetect import AdaptiveDetector, ContentDetector
from scenedetect.common import FrameTimecode, Timecode
from scenedetect.scene_manager import compute_downscale_factor

from bl_data.records import Scene

from .frames import _plane
from .probe import _fraction

FALLBACK_THRESHOLD = 20.0
"""ContentDetector threshold used when AdaptiveDetector finds no cut (DESIGN.md §5)."""


class _Clock:
    """Presentation time of each frame relative to the stream start, as scenedetect's PyAV backend sees it.

    The frame time base and the start offset in it are worked out once (not per frame).
    """

    def __init__(self, stream: av.video.stream.VideoStream, rate: Fraction):
        self.stream = stream
        self.rate = FrameTimecode(0, fps=rate)  # passed as `fps`: FrameTimecode takes its rate as is
        self.count = 0
        self.time_base: Fraction | None = None  # of the frames seen so far
        self.start = 0  # stream start in `time_base` units

    def timecode(self, frame: av.VideoFrame) -> FrameTimecode:
        self.count += 1
        pts, time_base = frame.pts, frame.time_base
        if pts is None or not time_base:
            return FrameTimecode(
                Timecode(pts=self.count - 1, time_base=1 / self.rate.frame_rate), fps=self.rate
            )
        if time_base != self.time_base:
            self.time_base = _fraction(time_base)
            self.start = self.stream.start_time or 0
            if self.start and self.stream.time_base != time_base:
                self.start = int(self.start * _fraction(self.stream.time_base) / self.time_base)
        return FrameTimecode(Timecode(pts=pts - self.start, time_base=self.time_base), fps=self.rate)


# 8-bit planar formats whose planes `_DetectorInput` resizes before the colour conversion
_PLANAR_8BIT = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"})


class _DetectorInput:
    """The BGR frame the detectors see: (h, w, 3) uint8 at pyscenedetect's auto downscale (~256 px wide).

    pyscenedetect converts the full frame to BGR and resizes it (linear). For 8-bit planar YUV this
    resizes each plane (linear) into a small frame of the same format and converts that with the same
    swscale conversion (no full-size conversion; about half the cost at 360p). Pixels differ from
    pyscenedetect's by a few levels (conversion and resize swapped: mean <= 1, 99th percentile <= 8 on
    the tested clips), the cuts are the same there. Other formats take pyscenedetect's route.
    """

    def __init__(self, width: int, height: int, downscale: str | float):
        factor = compute_downscale_factor(max(width, height)) if downscale == "auto" else float(downscale)
        self.size = (max(1, round(width / factor)), max(1, round(height / factor))) if factor > 1 else None
        self.reformatter = VideoReformatter()  # one SwsContext for all frames
        self.small: av.VideoFrame | None = None
        self.format = ""  # of `small`
        self.targets: list[tuple[np.ndarray, tuple[int, int]]] = []  # views of its planes, their sizes

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        """A view of a new frame's buffer."""
        if self.size is None:
            return _plane(self.reformatter.reformat(frame, format="bgr24", threads=1).planes[0], 3)
        name = frame.format.name
        if name not in _PLANAR_8BIT:
            image = self.reformatter.reformat(frame, format="bgr24", threads=1).to_ndarray()
            return cv2.resize(image, self.size, interpolation=cv2.INTER_LINEAR)
        if name != self.format:
            self.small, self.format = av.VideoFrame(*self.size, name), name
            self.targets = [(_plane(plane), (plane.width, plane.height)) for plane in self.small.planes]
        small = self.small
        small.colorspace, small.color_range = frame.colorspace, frame.color_range
        for src, (target, size) in zip(frame.planes, self.targets, strict=True):
            cv2.resize(_plane(src), size, target, 0, 0, cv2.INTER_LINEAR)
        return _plane(self.reformatter.reformat(small, format="bgr24", threads=1).planes[0], 3)


class _Score:
    """ContentDetector's frame score (HSV mean absolute differences, default weights), computed once.

    The same value `ContentDetector._calculate_frame_score` gives (integer sums over the pixels, divided
    as there); both detectors are fed it instead of each converting and differencing the frame.
    """

    weights = ContentDetector.DEFAULT_COMPONENT_WEIGHTS

    def __init__(self):
        assert self.weights.delta_edges == 0.0  # edges are not computed
        self.total_weight = sum(abs(w) for w in self.weights)
        self.hsv: np.ndarray | None = None  # this frame's, (h, w, 3) uint8
        self.last: np.ndarray | None = None  # the previous frame's
        self.diff: np.ndarray | None = None

    def __call__(self, bgr: np.ndarray) -> float:
        if self.hsv is None:
            self.hsv, self.last, self.diff = (np.empty_like(bgr) for _ in range(3))
            cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV, self.last)
            return 0.0
        hsv, last = self.hsv, self.last
        cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV, hsv)
        self.hsv, self.last = last, hsv
        pixels = float(hsv.shape[0] * hsv.shape[1])
        hue, sat, lum, _ = cv2.sumElems(cv2.absdiff(hsv, last, self.diff))
        w = self.weights  # summed in ContentDetector's order: the same float
        return (
            hue / pixels * w[0] + sat / pixels * w[1] + lum / pixels * w[2] + 0.0 * w[3]
        ) / self.total_weight


class _GivenScore:
    """A pyscenedetect detector fed the frame's `_Score` in place of the image; it makes every decision.

    It overrides the detectors' private score hook (no public one takes a score): scenedetect is pinned to
    the 0.7 series, and `tests/test_media_scenedetect.py` checks the hook against the installed version.
    Feeding each detector the image instead costs 0.20 ms per 256×144 frame and detector against 0.07 ms
    for the one shared score (the whole analysis of a 360p frame takes about 0.64 ms: benchmarks/RESULTS.md).
    """

    def _calculate_frame_score(self, timecode: FrameTimecode, score: float) -> float:
        return score


class _Adaptive(_GivenScore, AdaptiveDetector):
    pass


class _Content(_GivenScore, ContentDetector):
    pass


class _SceneCutter:
    """AdaptiveDetector (defaults) and ContentDetector(20) fed the same frames, in one pass.

    The detectors see the frames at the size `scenedetect.SceneManager` gives them (see
    `_DetectorInput`), so the cuts equal those of the `open_video(backend="pyav")` + `SceneManager`
    recipe, which would decode twice for the fallback.
    """

    def __init__(self, width: int, height: int, min_scene_len: int | float, downscale: str | float):
        self.input = _DetectorInput(width, height, downscale)
        self.score = _Score()
        self.detectors = [
            _Adaptive(min_scene_len=min_scene_len),
            _Content(threshold=FALLBACK_THRESHOLD, min_scene_len=min_scene_len),
        ]
        self.cuts: list[list[FrameTimecode]] = [[], []]
        self.last: FrameTimecode | None = None

    def scores(self, frames: list[av.VideoFrame]) -> list[float]:
        """The next frames' scores (each step over all of them in turn, for the caches)."""
        return [self.score(image) for image in [self.input(frame) for frame in frames]]

    def feed(self, timecode: FrameTimecode, score: float) -> list[list[FrameTimecode]]:
        """Feeds the next frame's score; returns the cuts each detector emitted on it."""
        adaptive, fallback = self.detectors
        new = [adaptive.process_frame(timecode, score), []]
        if not self.cuts[0]:  # `_live`
            new[1] = fallback.process_frame(timecode, score)
        for cuts, emitted in zip(self.cuts, new, strict=True):
            cuts += emitted
        self.last = timecode
        return new

    def finish(self) -> list[list[FrameTimecode]]:
        """The detectors' post-processing cuts, after the last frame."""
        new = [
            d.post_process(self.last) if live and self.last is not None else []
            for d, live in zip(self.detectors, self._live(), strict=True)
        ]
        for cuts, emitted in zip(self.cuts, new, strict=True):
            cuts += emitted
        return new

    def _live(self) -> list[bool]:
        """The fallback detector stops once the adaptive one has cut: its cuts would not be used."""
        return [True, not self.cuts[0]]

    @property
    def chosen(self) -> int:
        """The detector whose cuts make the scenes: adaptive, or the fallback when adaptive found none."""
        return 0 if self.cuts[0] else 1

    def scenes(self, end: float) -> list[Scene]:
        """Scenes [start, end) from the chosen detector's cuts."""
        chosen = self.cuts[self.chosen]
        times = sorted({round(cut.seconds, 6) for cut in chosen} - {0.0})
        bounds = [0.0, *(t for t in times if t < end), end]
        return [Scene(i, start, stop) for i, (start, stop) in enumerate(itertools.pairwise(bounds))]

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
"""

from __future__ import annotations

import itertools
import math
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter
from scenedetect import AdaptiveDetector, ContentDetector
from scenedetect.common import FrameTimecode, Timecode
from scenedetect.scene_manager import compute_downscale_factor

from bl_data.records import Scene

MediaSource = str | os.PathLike | BinaryIO
"""A path, or a seekable binary file object (e.g. `io.BytesIO` of an mp4 member)."""

FALLBACK_THRESHOLD = 20.0
"""ContentDetector threshold used when AdaptiveDetector finds no cut (DESIGN.md §5)."""

_EPS = 1e-6  # seconds: timestamps from pts are exact fractions; this absorbs float rounding


class MediaError(Exception):
    """A media file that cannot be used, with the reason (zero-length, corrupt or truncated, no video)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class MediaInfo:
    """What `probe` reads from the container. An image has duration 0, fps 0 and one frame."""

    duration: float  # seconds
    fps: float  # average frame rate
    width: int  # as coded, before any display rotation
    height: int
    has_audio: bool
    is_video: bool  # False for a still image
    num_frames: int  # video packets in the stream (each a frame), 1 for an image


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


def _name(source: MediaSource) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return str(getattr(source, "name", "<stream>"))


def _open(source: MediaSource) -> av.container.InputContainer:
    """Open `source` for reading its first video stream (single-threaded), or raise `MediaError`."""
    name = _name(source)
    if isinstance(source, str | os.PathLike):
        try:
            size = os.stat(source).st_size
        except OSError as exc:
            raise MediaError(name, f"cannot read file ({exc.strerror})") from exc
        if not Path(source).is_file():
            raise MediaError(name, "not a regular file")
    else:
        size = source.seek(0, os.SEEK_END)
        source.seek(0)
    if size == 0:
        raise MediaError(name, "zero-length file")
    try:
        container = av.open(source if not isinstance(source, os.PathLike) else os.fspath(source))
    except av.error.FFmpegError as exc:
        raise MediaError(name, f"corrupt or truncated file, not readable as media ({exc.strerror})") from exc
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise MediaError(name, f"no video stream (streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    stream.thread_type = "NONE"
    stream.codec_context.thread_count = 1
    return container


def _is_image(container: av.container.InputContainer) -> bool:
    """Single-image demuxers: `image2` (by file name) and the `*_pipe` ones (by content)."""
    return container.format.name == "image2" or container.format.name.endswith("_pipe")


def _fraction(rate) -> Fraction | None:
    return Fraction(rate.numerator, rate.denominator) if rate else None


class _Video:
    """An open media file, read in one pass: the video packets, checked and counted as `probe` reports
    them, and the frames decoded from them. A context manager."""

    def __init__(self, source: MediaSource):
        self.name = _name(source)
        self.container = _open(source)
        self.stream = self.container.streams.video[0]
        self.packets = 0  # video packets demuxed so far (the demuxer's final empty one not counted)
        if self.width <= 0 or self.height <= 0:  # a header that says 0x0: nothing to decode into
            kind = "image" if self.is_image else "video"
            self.close()
            raise MediaError(self.name, f"{kind} has {self.width}×{self.height} frames (no picture size)")

    def __enter__(self) -> _Video:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.container.close()

    @property
    def is_image(self) -> bool:
        return _is_image(self.container)

    @property
    def width(self) -> int:  # as coded
        return self.stream.codec_context.width

    @property
    def height(self) -> int:
        return self.stream.codec_context.height

    @property
    def declared_duration(self) -> float | None:
        """Seconds, from the stream's or else the container's header; None when neither has it."""
        if self.stream.duration is not None and self.stream.time_base:
            return float(self.stream.duration * self.stream.time_base)
        if self.container.duration:
            return self.container.duration / av.time_base
        return None

    def demux(self) -> Iterator[av.Packet]:
        """The video packets in order; a damaged packet or a read error raises `MediaError`."""
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:
                raise MediaError(
                    self.name,
                    f"corrupt or truncated video stream (read error after {self.packets} frames: {exc.strerror})",
                ) from exc
            if packet.size:  # else the demuxer's final flush packet
                if packet.is_corrupt:
                    at = float(packet.pts * self.stream.time_base) if packet.pts is not None else math.nan
                    raise MediaError(
                        self.name, f"corrupt or truncated video stream (damaged packet at {at:.2f} s)"
                    )
                self.packets += 1
            yield packet

    def runs(self, size: int) -> Iterator[list[av.VideoFrame]]:
        """The decoded frames in order, in runs of `size` (the last may be shorter)."""
        frames = self.frames()
        while run := list(itertools.islice(frames, size)):
            yield run

    def frames(self) -> Iterator[av.VideoFrame]:
        """The decoded frames in order; a decoder error raises `MediaError`."""
        for packet in self.demux():
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                raise MediaError(
                    self.name, f"corrupt or truncated video stream (decode error: {exc})"
                ) from exc
            yield from frames

    def info(self) -> MediaInfo:
        """What `probe` reports, once every packet has been demuxed. Raises `MediaError` when the stream
        has no packets or fewer than the container declares."""
        width, height, stream = self.width, self.height, self.stream
        has_audio = bool(self.container.streams.audio)
        if self.is_image:
            return MediaInfo(0.0, 0.0, width, height, has_audio, False, 1)
        count = self.packets
        if count == 0:
            raise MediaError(self.name, "corrupt or truncated video stream (no video frames)")
        if stream.frames and count < stream.frames:
            raise MediaError(self.name, f"truncated video stream ({count} of {stream.frames} frames present)")
        rate = _fraction(stream.average_rate) or _fraction(stream.guessed_rate)
        duration = self.declared_duration
        if duration is None:
            duration = float(count / rate) if rate else 0.0
        fps = float(rate) if rate else (count / duration if duration else 0.0)
        return MediaInfo(duration, fps, width, height, has_audio, True, count)


def probe(source: MediaSource) -> MediaInfo:
    """Read duration, frame rate, size and streams, and check the video stream is whole.

    The video packets are demuxed (not decoded): a damaged packet, a read error, or fewer packets than
    the container declares is a truncated or corrupt file. Raises `MediaError`.
    """
    with _Video(source) as video:
        if not video.is_image:
            for _ in video.demux():
                pass
        return video.info()


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


def _plane(plane: av.video.plane.VideoPlane, channels: int = 1) -> np.ndarray:
    """(height, width) uint8 view of one plane of an 8-bit planar frame, or (height, width, channels) of
    a packed one (rgb24: 3); row padding cut off."""
    rows = np.frombuffer(plane, np.uint8, count=plane.line_size * plane.height)
    rows = rows.reshape(plane.height, plane.line_size)[:, : plane.width * channels]
    return rows.reshape(plane.height, plane.width, channels) if channels > 1 else rows


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
    """A pyscenedetect detector fed the frame's `_Score` in place of the image; it makes every decision."""

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


_HELD_BYTES = 256 << 20
"""At most this much decoded video is held back for keyframes (~180 frames at 720p, ~80 at 1080p)."""


class _HeldKeyframes:
    """Scene keyframes picked in the scene pass from decoded frames held back (converted only when picked).

    A detector's cut closes its scene [start, cut); the keyframe is the frame on screen at the midpoint
    (`_KeyframePicker`'s rule). A detector emits a cut at most `event_buffer_length` frames after the
    frame it names, so frames before the earliest midpoint still possible are released as the pass goes.
    When more than `_HELD_BYTES` would be held, the oldest frames go and the keyframes that needed them
    come back as None, for a second pass to pick. The fallback detector is followed until the adaptive
    one cuts (from then on its scenes are not used).
    """

    def __init__(self, detectors: list[ContentDetector], size: tuple[int, int]):
        self.rgb = _RGB(size)
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
        while len(held) > 1 and (held[1][0] <= keep + _EPS or len(held) * self.frame_bytes > _HELD_BYTES):
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
        held = _HeldKeyframes(cutter.detectors, size) if keyframes else None
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

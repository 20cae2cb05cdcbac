"""Opening media for one sequential pass: its checked video packets and decoded frames, and `probe`."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av

MediaSource = str | os.PathLike | BinaryIO
"""A path, or a seekable binary file object (e.g. `io.BytesIO` of an mp4 member)."""


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

"""The scene cutter's hook into pyscenedetect's private `_calculate_frame_score`, checked against the installed
version: its signature, and cuts equal to the stock detectors' on the same frames (pinned `<0.8`)."""

import inspect

import cv2
import numpy as np
from scenedetect import AdaptiveDetector, ContentDetector
from scenedetect.common import FrameTimecode

from bl_data.media import FALLBACK_THRESHOLD
from bl_data.media.scenes import _Adaptive, _Content, _GivenScore, _Score

FPS = 10.0


def _shots(seed: int = 0) -> list[np.ndarray]:
    """(36, 64, 3) uint8 BGR frames: five shots of 16-24 frames, each a smooth random image under sensor
    noise and a slow pan, with a flash inside the third shot (about 100 frames in all)."""
    rng = np.random.default_rng(seed)
    frames = []
    for shot in range(5):
        coarse = rng.integers(0, 256, (4, 12, 3), np.uint8)  # (4, 12, 3)
        base = cv2.resize(
            coarse, (96, 36), interpolation=cv2.INTER_LINEAR
        )  # (36, 96, 3), panned over 64 columns
        for i in range(int(rng.integers(16, 25))):
            frame = base[:, i : i + 64].astype(np.int16) + rng.integers(-6, 7, (36, 64, 3))  # (36, 64, 3)
            if shot == 2 and i == 6:
                frame += 90
            frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def _cuts(detector: ContentDetector, inputs: list) -> list[list[float]]:
    """The cuts (seconds) `detector` emits on each input, then those of its post-processing."""
    timecodes = [FrameTimecode(i, fps=FPS) for i in range(len(inputs))]
    emitted = [detector.process_frame(tc, x) for tc, x in zip(timecodes, inputs, strict=True)]
    emitted.append(detector.post_process(timecodes[-1]))
    return [[cut.seconds for cut in cuts] for cuts in emitted]


def test_private_frame_score_hook_has_the_signature_the_override_assumes():
    hook = ContentDetector._calculate_frame_score
    assert list(inspect.signature(hook).parameters) == ["self", "timecode", "frame_img"]
    assert AdaptiveDetector._calculate_frame_score is hook  # the adaptive detector scores as ContentDetector
    assert list(inspect.signature(_GivenScore._calculate_frame_score).parameters)[:2] == ["self", "timecode"]


def test_detectors_fed_the_shared_score_cut_where_the_stock_detectors_do():
    frames = _shots()
    score = _Score()
    scores = [score(frame) for frame in frames]
    pairs = [
        (AdaptiveDetector(), _Adaptive()),
        (ContentDetector(threshold=FALLBACK_THRESHOLD), _Content(threshold=FALLBACK_THRESHOLD)),
    ]
    for stock, ours in pairs:
        want = _cuts(stock, frames)
        assert sum(map(len, want)) >= 3, type(stock).__name__  # the shots' cuts are found
        assert _cuts(ours, scores) == want, type(stock).__name__
        assert ours._frame_score == stock._frame_score  # the last score, bit for bit

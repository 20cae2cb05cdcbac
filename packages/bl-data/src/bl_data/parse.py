"""Read a generated answer back into structured behaviour: the inverse of `verbalize`'s behaviour block.

    parsed = parse_behavior(answer)      # ParsedBehavior(likes_percent=2.0, upvotes=None, comments=[...],
                                         #                replay={1: 0.06, 3: 1.0}, repeated_scenes=[])

A missing part is None; text that is not a behaviour block raises `BehaviorParseError` with the raw text kept.
Replay values are read by scene number ("Scene 3: 1.00" is scene 3 wherever it stands); a scene named again
keeps its first value and is listed in `repeated_scenes`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .verbalize import SEPARATOR

_LIKES = re.compile(r"will be liked by (\d+(?:\.\d+)?)% of viewers")
_UPVOTES = re.compile(r"will get (-?\d+) upvotes")
_COMMENT = re.compile(r'^\s*(\d+)\.\s*"(.*)"\s*$')
_REPLAY_HEAD = "The replay values for each scene would be:"
_REPLAY = re.compile(r"^\s*Scene (\d+): (-?\d+(?:\.\d+)?)\s*$")


class BehaviorParseError(ValueError):
    """An answer with no recognisable behaviour block; `.raw` keeps the text."""

    def __init__(self, message: str, raw: str):
        super().__init__(message)
        self.raw = raw


@dataclass
class ParsedBehavior:
    likes_percent: float | None = None
    upvotes: int | None = None
    comments: list[str] = field(default_factory=list)
    replay: dict[int, float] | None = None  # {scene number: value}
    repeated_scenes: list[int] = field(default_factory=list)  # scene numbers given more than once
    raw: str = ""


def parse_behavior(text: str) -> ParsedBehavior:
    """Parse the part after `>>> BEHAVIOR <<<` (or the whole text when the separator is absent)."""
    block = text.split(SEPARATOR, 1)[1] if SEPARATOR in text else text
    out = ParsedBehavior(raw=text)
    if likes := _LIKES.search(block):
        out.likes_percent = float(likes.group(1))
    if upvotes := _UPVOTES.search(block):
        out.upvotes = int(upvotes.group(1))
    head, _, replay_part = block.partition(_REPLAY_HEAD)
    out.comments = [m.group(2) for line in head.splitlines() if (m := _COMMENT.match(line))]
    if _REPLAY_HEAD in block:
        out.replay = {}
        for line in replay_part.splitlines():
            if m := _REPLAY.match(line):
                scene, value = int(m.group(1)), float(m.group(2))
                if scene in out.replay:
                    out.repeated_scenes.append(scene)
                else:
                    out.replay[scene] = value
    if out.likes_percent is None and out.upvotes is None and not out.comments and out.replay is None:
        raise BehaviorParseError("no likes, upvotes, comments or replay values found in the answer", text)
    return out


def comment_spans(answer: str) -> list[tuple[int, int]]:
    """`[start, end)` character spans of the quoted comments in an answer's behaviour block (for their perplexity)."""
    start = answer.find(SEPARATOR)
    if start < 0:
        return []
    spans, offset = [], start
    for line in answer[start:].splitlines(keepends=True):
        if m := _COMMENT.match(line.rstrip("\n")):
            spans.append((offset + m.start(2), offset + m.end(2)))
        offset += len(line)
    return spans

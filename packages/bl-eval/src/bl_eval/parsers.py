"""Answer parsers for the `generate` / `kshot` protocols: `PARSERS[name](text) -> value | None`.

A parser never raises on a malformed answer: it returns None, which the metrics count as unparsed.
Values are JSON-serialisable (the runner caches them as JSON).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bl_data.behavior_metrics import replay_prediction
from bl_data.parse import BehaviorParseError, parse_behavior

Parser = Callable[[str], Any]

_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<![\w.])[-+]?\.\d+")
_MAGNITUDE = re.compile(r"\s*(thousand|million|billion|[kmb])\b", re.IGNORECASE)
_SCALE = {"k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6, "b": 1e9, "billion": 1e9}
_TIME = re.compile(
    r"(?<![\w.:])(?:(\d+):)?(\d+):(\d{2}(?:\.\d+)?)(?![\d:])|(?<![\w.:])(\d+(?:\.\d+)?)(?![\d:])"
)


def parse_number(text: str) -> float | None:
    """The first number in the text ("1,234", "-0.5", "45%" -> 45.0), or None."""
    match = _NUMBER.search(text)
    return float(match.group().replace(",", "")) if match else None


def parse_count(text: str) -> float | None:
    """The first number with an optional magnitude word ("1.2 million", "3k" -> 3000.0), or None."""
    match = _NUMBER.search(text)
    if not match:
        return None
    value = float(match.group().replace(",", ""))
    scale = _MAGNITUDE.match(text, match.end())
    return value * _SCALE[scale.group(1).lower()] if scale else value


def parse_log_count(text: str) -> float | None:
    """Natural log of `parse_count` (LVU's view-count target is log(views)); None for no positive count."""
    value = parse_count(text)
    return math.log(value) if value is not None and value > 0 else None


def closed_set(labels: Sequence[str], synonyms: Mapping[str, str] | None = None) -> Parser:
    """A parser returning the label (from `labels`) mentioned first, as a whole word, case-insensitively;
    `synonyms` maps other words to labels. At one position the longest match wins."""
    names = {label.casefold(): label for label in labels}
    names |= {word.casefold(): label for word, label in (synonyms or {}).items()}
    alternatives = "|".join(re.escape(word) for word in sorted(names, key=len, reverse=True))
    pattern = re.compile(rf"(?<!\w)({alternatives})(?!\w)", re.IGNORECASE)

    def parse(text: str) -> str | None:
        match = pattern.search(text)
        return names[match.group(1).casefold()] if match else None

    return parse


parse_yes_no = closed_set(("yes", "no"))


def parse_text(text: str) -> str:
    """The answer itself, stripped."""
    return text.strip()


def parse_memorability(text: str) -> float | None:
    """A memorability score in [0, 1]: Henry's two-digit "00"-"99" (and 100) divided by 100, or a decimal
    already in [0, 1] ("0.83"); None otherwise."""
    match = _NUMBER.search(text)
    if not match:
        return None
    token = match.group().replace(",", "")
    value = float(token)
    if "." in token:
        return value if 0.0 <= value <= 1.0 else None
    return value / 100.0 if 0 <= value <= 100 else None


def parse_behavior_block(text: str) -> dict[str, Any] | None:
    """The behaviour block (`bl_data.parse.parse_behavior`) as a dict: likes_percent, upvotes, comments,
    replay (`bl_data.behavior_metrics.replay_prediction`: values by scene number); None when the answer has none."""
    try:
        parsed = parse_behavior(text)
    except BehaviorParseError:
        return None
    return {
        "likes_percent": parsed.likes_percent,
        "upvotes": parsed.upvotes,
        "comments": parsed.comments,
        "replay": replay_prediction(parsed),
    }


def parse_likes_percent(text: str) -> float | None:
    """The "liked by X% of viewers" value of a behaviour block."""
    parsed = parse_behavior_block(text)
    return None if parsed is None else parsed["likes_percent"]


def parse_replay(text: str) -> dict[str, Any] | None:
    """The replay values of a behaviour block by scene number (`replay_prediction`)."""
    parsed = parse_behavior_block(text)
    return None if parsed is None else parsed["replay"]


def _seconds(match: re.Match[str]) -> float:
    hours, minutes, seconds, plain = match.groups()
    if plain is not None:
        return float(plain)
    return 3600 * int(hours or 0) + 60 * int(minutes) + float(seconds)


def parse_windows(text: str) -> list[list[float]] | None:
    """Moments as `[[start, end, score], ...]` seconds: the times in the answer ("12.5", "1:02", "0:01:02")
    taken in pairs ("12 - 18, 40 to 52" -> two windows), each ordered start <= end; earlier windows get
    higher scores (n, n-1, ...). None when the answer has fewer than two times."""
    times = [_seconds(m) for m in _TIME.finditer(text)]
    pairs = [sorted(times[i : i + 2]) for i in range(0, len(times) - 1, 2)]
    return [[start, end, float(len(pairs) - i)] for i, (start, end) in enumerate(pairs)] or None


PARSERS: dict[str, Parser] = {
    "number": parse_number,
    "count": parse_count,
    "log_count": parse_log_count,
    "yes_no": parse_yes_no,
    "text": parse_text,
    "memorability": parse_memorability,
    "behavior": parse_behavior_block,
    "likes_percent": parse_likes_percent,
    "replay": parse_replay,
    "windows": parse_windows,
    "sentiment": closed_set(("positive", "negative"), {"pos": "positive", "neg": "negative"}),
}

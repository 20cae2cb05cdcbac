from __future__ import annotations

import json
import math

import pytest

from bl_data.records import Comment, Post, SceneDescription
from bl_data.verbalize import verbalize
from bl_eval.parsers import (
    PARSERS,
    closed_set,
    parse_behavior_block,
    parse_count,
    parse_likes_percent,
    parse_log_count,
    parse_memorability,
    parse_number,
    parse_replay,
    parse_text,
    parse_windows,
    parse_yes_no,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("About 45% of viewers", 45.0),
        ("1,234.5 views", 1234.5),
        ("it is -0.5", -0.5),
        (".5", 0.5),
        ("none", None),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_parse_count_and_log_count():
    assert parse_count("about 1.2 million views") == pytest.approx(1.2e6)
    assert parse_count("3k") == 3000.0
    assert parse_count("500 views") == 500.0
    assert parse_log_count("1 million") == pytest.approx(math.log(1e6))
    assert parse_log_count("0 views") is None
    assert parse_log_count("many") is None


def test_closed_set_first_mention_synonyms_longest():
    sentiment = PARSERS["sentiment"]
    assert sentiment("Negative, not positive.") == "negative"
    assert sentiment("POS") == "positive"
    assert sentiment("it is neutral") is None
    emotion = closed_set(("anger", "sadness"), {"sad": "sadness", "angry": "anger"})
    assert emotion("She looks sad, maybe angry") == "sadness"
    assert emotion("Sadness") == "sadness"
    assert emotion("the word sadder") is None  # whole words only


def test_parse_yes_no():
    assert parse_yes_no("Yes, it is") == "yes"
    assert parse_yes_no("No.") == "no"
    assert parse_yes_no("I don't know") is None


def test_parse_text():
    assert parse_text("  a cat \n") == "a cat"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("57", 0.57),
        ("Score: 07", 0.07),
        ("0.83", 0.83),
        ("100", 1.0),
        ("150", None),
        ("1.5", None),
        ("n/a", None),
    ],
)
def test_parse_memorability(text, value):
    assert parse_memorability(text) == (pytest.approx(value) if value is not None else None)


def _listing1() -> tuple[str, dict]:
    post = Post(
        id="v1",
        source="youtube",
        media_path=None,
        title="A title",
        channel="Brand",
        view_count=1000,
        like_count=20,
        comments=[Comment("What a great ad this is", 9), Comment("Loved every second of it", 3)],
    )
    scene = SceneDescription("a dog on a beach", ("black",), ("white",), "neutral")
    sample = verbalize(post, [scene, scene], replay=[0.06, 0.23])
    return sample.gpt, sample.behavior


def test_behavior_parsers_round_trip_the_verbaliser():
    answer, behavior = _listing1()
    parsed = parse_behavior_block(answer)
    assert parsed == {
        "likes_percent": behavior["likes_percent"],
        "upvotes": None,
        "comments": [c["text"] for c in behavior["top_comments"]],
        "replay": {"values": [[1, 0.06], [2, 0.23]], "repeated": []},
    }
    assert json.loads(json.dumps(parsed)) == parsed  # the runner caches predictions as JSON
    assert parse_likes_percent(answer) == 2.0
    assert parse_replay(answer) == parsed["replay"]
    skipped = answer.replace("Scene 2: 0.23", "Scene 3: 0.23")  # the model skips scene 2
    assert parse_replay(skipped)["values"] == [[1, 0.06], [3, 0.23]]
    assert parse_behavior_block("no behaviour here") is None
    assert parse_likes_percent("garbage") is None


@pytest.mark.parametrize(
    ("text", "windows"),
    [
        ("12 - 18, then 40.5 to 52", [[12.0, 18.0, 2.0], [40.5, 52.0, 1.0]]),
        ("from 1:02 to 1:10", [[62.0, 70.0, 1.0]]),
        ("0:01:02 - 0:01:04", [[62.0, 64.0, 1.0]]),
        ("between 18s and 12s", [[12.0, 18.0, 1.0]]),
        ("at 5 seconds", None),
    ],
)
def test_parse_windows(text, windows):
    assert parse_windows(text) == windows


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_parser_survives_garbage(name):
    value = PARSERS[name]("\x00 ??? \n")
    assert value is None or value == "\x00 ???"

"""The behaviour parser round-trips the verbaliser's output and reports malformed answers."""

from pathlib import Path

import pytest

from bl_data.parse import BehaviorParseError, comment_spans, parse_behavior
from bl_data.records import Comment, Post, SceneDescription
from bl_data.verbalize import verbalize

GOLDEN = Path(__file__).parent / "golden"


def _post(**kw) -> Post:
    base = dict(
        id="v1",
        source="youtube",
        media_path=None,
        title="T",
        channel="C",
        view_count=20000,
        like_count=410,
        comments=[Comment("Great ad, loved the ending", 50), Comment('She said "wow" twice', 7)],
    )
    return Post(**(base | kw))


SCENES = [SceneDescription("a dog", ("black",), ("white",), "neutral", ("dog",))] * 3


def test_round_trips_likes_comments_and_replay():
    sample = verbalize(_post(), SCENES, replay=[0.06, 0.5, 1.0])
    parsed = parse_behavior(sample.gpt)
    assert parsed.likes_percent == round(100 * 410 / 20000, 1) == 2.0
    assert parsed.comments == ["Great ad, loved the ending", 'She said "wow" twice']
    assert parsed.replay == {1: 0.06, 2: 0.5, 3: 1.0} and parsed.upvotes is None


def test_round_trips_reddit_upvotes():
    post = _post(source="reddit", view_count=None, like_count=None, score=1234, subreddit="videos")
    parsed = parse_behavior(verbalize(post, SCENES).gpt)
    assert parsed.upvotes == 1234 and parsed.likes_percent is None and parsed.replay is None


def test_golden_listing_1_parses():
    text = (GOLDEN / "youtube_video.txt").read_text().split("### gpt\n", 1)[1].split("### behavior", 1)[0]
    parsed = parse_behavior(text)
    assert (
        parsed.likes_percent == 2.0
        and len(parsed.comments) == 5
        and parsed.replay == {1: 0.06, 2: 0.23, 3: 0.38}
    )


def test_replay_is_read_by_scene_number_and_repeats_are_listed():
    text = "The replay values for each scene would be:\nScene 3: 0.90\nScene 1: 1.00\nScene 3: 0.10\nScene 7: 0.5"
    parsed = parse_behavior(text)
    assert parsed.replay == {3: 0.9, 1: 1.0, 7: 0.5}  # scene 2 skipped: not shifted into its place
    assert parsed.repeated_scenes == [3]


def test_malformed_answer_keeps_the_raw_text():
    with pytest.raises(BehaviorParseError) as err:
        parse_behavior("I think people will enjoy it.")
    assert err.value.raw == "I think people will enjoy it."


def test_comment_spans_cover_exactly_the_comment_texts():
    answer = verbalize(_post(), SCENES, replay=[0.1, 0.2, 0.3]).gpt
    spans = comment_spans(answer)
    assert [answer[a:b] for a, b in spans] == ["Great ad, loved the ending", 'She said "wow" twice']
    assert comment_spans("no behaviour here") == []

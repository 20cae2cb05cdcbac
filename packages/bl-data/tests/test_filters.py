"""Each paper filter on fixtures, the TF-IDF dedup against hand-computed cosines, and the run report."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import pytest

from bl_data.filters import (
    BotRule,
    CommentWordsRule,
    DeletedRule,
    Dropped,
    DuplicateMediaRule,
    FilterReport,
    Filters,
    MaxDurationRule,
    MinCommentsRule,
    MinViewsRule,
    NearDuplicateCommentsRule,
    NsfwRule,
    comment_similarity,
    hash_media,
)
from bl_data.pipeline import MediaHashes, MediaLedger
from bl_data.records import Comment, Post
from bl_data.sources._common import media_names


def _post(
    post_id: str = "p", source: str = "reddit", comments: list[Comment] | None = None, **kw: object
) -> Post:
    fields = {"title": "A title", "media_path": None, "author": "someone", **kw}
    return Post(id=post_id, source=source, comments=comments or [], **fields)  # type: ignore[arg-type]


def _texts(result: Post | str) -> list[str]:
    assert isinstance(result, Post), result
    return [c.text for c in result.comments]


def test_nsfw_drops_over_18_and_listed_words(tmp_path: Path) -> None:
    assert NsfwRule().apply(_post(over_18=True)) == "post marked over_18"
    words = tmp_path / "en"
    words.write_text("badword\nvery bad phrase\n\n", encoding="utf-8")
    rule = NsfwRule.from_file(words)
    assert rule.words == frozenset({"badword", "very bad phrase"})
    comments = [
        Comment("a BADWORD here"),
        Comment("this is a Very  Bad\nphrase indeed"),
        Comment("badwords and bad phrases are not listed"),
        Comment("(badword)"),
    ]
    assert _texts(rule.apply(_post(comments=comments))) == ["badwords and bad phrases are not listed"]
    assert _texts(NsfwRule(words=frozenset()).apply(_post(comments=comments))) == [c.text for c in comments]


def test_default_nsfw_words_are_a_placeholder() -> None:
    post = _post(comments=[Comment("this is NSFW content"), Comment("this is fine content")])
    assert _texts(NsfwRule().apply(post)) == ["this is fine content"]


def test_bot_rule() -> None:
    rule = BotRule()
    assert rule.apply(_post(author="AutoModerator")) == "bot author 'AutoModerator'"
    assert isinstance(rule.apply(_post(author="RemindMeBot")), str)
    comments = [
        Comment("hi there friend", author="sneakpeekbot"),
        Comment("hi", author="human"),
        Comment("x"),
    ]
    assert _texts(rule.apply(_post(comments=comments))) == ["hi", "x"]
    custom = BotRule(names=frozenset({"Gatekeeper"}), suffixes=())
    assert isinstance(custom.apply(_post(author="gatekeeper")), str)
    assert isinstance(custom.apply(_post(author="RemindMeBot")), Post)


def test_deleted_rule() -> None:
    rule = DeletedRule()
    assert rule.apply(_post(title="[deleted]")) == "post deleted or removed"
    assert isinstance(rule.apply(_post(author="[removed]")), str)
    comments = [
        Comment("[removed]"),
        Comment(" [deleted] "),
        Comment("kept", author="[deleted]"),
        Comment("ok"),
    ]
    assert _texts(rule.apply(_post(comments=comments))) == ["ok"]


def test_duplicate_media_by_file_hash_and_given_hash(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"same bytes")
    (tmp_path / "b.mp4").write_bytes(b"same bytes")
    (tmp_path / "c.mp4").write_bytes(b"other bytes")
    rule = DuplicateMediaRule()
    results = [rule.apply(_post(n, media_path=tmp_path / f"{n}.mp4")) for n in "abc"]
    assert [isinstance(r, Post) for r in results] == [True, False, True]
    assert results[1] == "same media as post 'a'"
    assert isinstance(rule.apply(_post("a", media_path=tmp_path / "a.mp4")), Post)  # the same post again
    assert isinstance(rule.apply(_post("nomedia")), Post)
    with pytest.raises(FileNotFoundError, match=r"gone\.mp4"):  # a failure for the caller, not a "duplicate"
        rule.apply(_post("gone", media_path=tmp_path / "gone.mp4"))
    given = DuplicateMediaRule(hashes={"x": "h1", "y": "h1"})
    assert isinstance(given.apply(_post("x")), Post)
    assert given.apply(_post("y")) == "same media as post 'x'"


def test_media_dedup_remembers_only_shared_content(tmp_path: Path) -> None:
    """With the digests of every file (`MediaHashes`), only content that several files share is remembered;
    the verdicts are those of the rule that remembers everything, and the digests are the files' sha256."""
    contents = {"a": b"same bytes", "b": b"other bytes", "c": b"same bytes", "d": b"third"}
    for name, data in contents.items():
        (tmp_path / f"{name}.mp4").write_bytes(data)
    ledger = MediaLedger(tmp_path, media_names(tmp_path))
    hashes = MediaHashes(ledger)
    hashes.hash(lambda paths: hash_media(paths, 1), chunk=3)  # two chunks
    assert dict(hashes) == {
        str(tmp_path / f"{n}.mp4"): hashlib.sha256(d).hexdigest() for n, d in contents.items()
    }
    compact = DuplicateMediaRule(media_hashes=hashes, repeated=hashes.repeated())
    full = DuplicateMediaRule()
    posts = [_post(n, media_path=tmp_path / f"{n}.mp4") for n in "abcd"]
    assert [compact.apply(p) for p in posts] == [full.apply(p) for p in posts]
    assert compact.apply(posts[2]) == "same media as post 'a'"
    assert compact.seen == {hashlib.sha256(b"same bytes").hexdigest(): "a"} and len(full.seen) == 3


def test_comment_words_per_source() -> None:
    texts = ["one two", "one two three", "one two three four", " ".join(["w"] * 100), " ".join(["w"] * 101)]
    comments = [Comment(t) for t in texts]
    assert _texts(CommentWordsRule().apply(_post(comments=comments))) == texts[1:]
    assert _texts(CommentWordsRule().apply(_post(source="blift", comments=comments))) == texts[1:]
    assert _texts(CommentWordsRule().apply(_post(source="youtube", comments=comments))) == texts[2:4]
    custom = CommentWordsRule(bounds={"reddit": (None, 2)})
    assert _texts(custom.apply(_post(comments=comments))) == texts[:1]


def test_tfidf_cosine_matches_hand_computation() -> None:
    # n = 2 documents; smoothed idf = ln((1 + n) / (1 + df)) + 1: shared words 1, unique words ln(1.5) + 1.
    unique = math.log(1.5) + 1
    similarity = comment_similarity(["red car", "red bus"])
    assert similarity[0, 1] == pytest.approx(1 / (1 + unique**2))  # = 0.3361
    assert similarity[0, 0] == pytest.approx(1.0)
    four_shared = comment_similarity(["great clip made today wow", "great clip made today lol"])
    assert four_shared[0, 1] == pytest.approx(4 / (4 + unique**2))  # = 0.6694


def test_near_duplicates_keep_the_most_liked() -> None:
    # n = 3: "great", "video", "thanks" are in 2 documents (idf ln(4/3) + 1), "lot" in 1 (idf ln 2 + 1);
    # "a" is ignored (words have 2+ characters). cos(c0, c1) = 3 s^2 / (sqrt(3) s sqrt(3 s^2 + u^2)) ~ 0.7965.
    shared, lot = math.log(4 / 3) + 1, math.log(2) + 1
    expected = 3 * shared**2 / (math.sqrt(3) * shared * math.sqrt(3 * shared**2 + lot**2))
    comments = [
        Comment("great video thanks", likes=1),
        Comment("great video thanks a lot", likes=10),
        Comment("terrible audio quality", likes=0),
    ]
    assert comment_similarity([c.text for c in comments])[0, 1] == pytest.approx(expected)
    assert expected == pytest.approx(0.7965, abs=1e-4)
    result = NearDuplicateCommentsRule().apply(_post(source="youtube", comments=comments))
    assert _texts(result) == ["great video thanks a lot", "terrible audio quality"]  # input order kept
    equal_likes = [dataclasses.replace(c, likes=0) for c in comments]
    result = NearDuplicateCommentsRule().apply(_post(source="youtube", comments=equal_likes))
    assert _texts(result) == ["great video thanks", "terrible audio quality"]  # tie: the earlier one


def test_near_duplicate_thresholds_differ_by_source() -> None:
    # cosine 0.6694: a duplicate at Reddit's 0.6, not at YouTube's 0.7
    comments = [Comment("great clip made today wow"), Comment("great clip made today lol")]
    rule = NearDuplicateCommentsRule()
    assert len(_texts(rule.apply(_post(source="reddit", comments=comments)))) == 1
    assert len(_texts(rule.apply(_post(source="youtube", comments=comments)))) == 2
    no_words = [Comment("a"), Comment("b"), Comment("!")]
    assert _texts(rule.apply(_post(comments=no_words))) == ["a", "b", "!"]  # empty vocabulary


def test_post_level_rules() -> None:
    assert MinCommentsRule().apply(_post(comments=[Comment("x")])) == "1 comments < 2"
    assert isinstance(MinCommentsRule().apply(_post(comments=[Comment("x"), Comment("y")])), Post)
    assert MaxDurationRule().apply(_post(duration=500.5)) == "duration 500.5 s > 500 s"
    assert isinstance(MaxDurationRule().apply(_post(duration=500.0)), Post)
    assert isinstance(MaxDurationRule().apply(_post(duration=900.0, is_video=False)), Post)
    assert isinstance(MaxDurationRule().apply(_post(duration=None)), Post)
    assert MinViewsRule().apply(_post(source="youtube", view_count=10_000)) == "10000 views <= 10000"
    assert isinstance(MinViewsRule().apply(_post(source="youtube", view_count=10_001)), Post)
    assert isinstance(MinViewsRule().apply(_post(source="youtube", view_count=None)), str)
    assert isinstance(MinViewsRule().apply(_post(source="reddit", view_count=None)), Post)


def test_filters_pipeline_and_report(tmp_path: Path) -> None:
    (tmp_path / "one.jpg").write_bytes(b"image")
    (tmp_path / "copy.jpg").write_bytes(b"image")
    good_yt = [
        Comment("what a great ad this is", likes=5),
        Comment("what a great ad this is!", likes=9),  # near-duplicate of the first, more liked: kept
        Comment("too short", likes=100),
        Comment("I love the music in it", likes=1, author="AutoModerator"),
        Comment("the colours are really lovely here", likes=2),
    ]
    posts = [
        _post("yt", "youtube", good_yt, view_count=20_000, duration=30.0),
        _post("lowviews", "youtube", good_yt, view_count=10_000),
        _post("nsfw", over_18=True),
        _post("bot", author="AutoModerator"),
        _post("gone", title="[removed]"),
        _post(
            "one",
            comments=[Comment("first real comment"), Comment("second real comment")],
            media_path=tmp_path / "one.jpg",
        ),
        _post("copy", media_path=tmp_path / "copy.jpg"),
        _post("few", comments=[Comment("only one comment here"), Comment("[deleted]")]),
        _post(
            "long", comments=[Comment("first real comment"), Comment("other words entirely")], duration=501.0
        ),
    ]
    filters = Filters()
    results = [filters(p) for p in posts]
    kept = [r for r in results if isinstance(r, Post)]
    assert [p.id for p in kept] == ["yt", "one"]
    assert _texts(kept[0]) == ["what a great ad this is!", "the colours are really lovely here"]
    assert posts[0].comments == good_yt  # the input is not modified
    dropped = {r.post_id: r.rule for r in results if isinstance(r, Dropped)}
    assert dropped == {
        "lowviews": "min_views",
        "nsfw": "nsfw",
        "bot": "bot",
        "gone": "deleted",
        "copy": "duplicate_media",
        "few": "min_comments",
        "long": "max_duration",
    }
    assert filters.report.to_dict() == {
        "posts_in": 9,
        "posts_kept": 2,
        "posts_dropped": {
            "min_views": 1,
            "nsfw": 1,
            "bot": 1,
            "deleted": 1,
            "duplicate_media": 1,
            "min_comments": 1,
            "max_duration": 1,
        },
        "comments_removed": {"bot": 2, "deleted": 1, "comment_words": 2, "near_duplicate_comments": 2},
    }


def test_report_merge_and_unique_rule_names() -> None:
    a, b = FilterReport(2, 1), FilterReport(3, 2)
    a.posts_dropped["nsfw"] += 1
    b.posts_dropped["nsfw"] += 1
    b.comments_removed["bot"] += 4
    a.merge(b)
    assert a.to_dict() == {
        "posts_in": 5,
        "posts_kept": 3,
        "posts_dropped": {"nsfw": 2},
        "comments_removed": {"bot": 4},
    }
    with pytest.raises(ValueError, match="unique"):
        Filters([MinCommentsRule(), MinCommentsRule()])

"""The paper's dataset filters (PAPER.md §2.1) as named, configurable rules, and a report of what they drop.

A rule's `apply(post)` returns the post (a copy with fewer comments when it removes some) or a drop reason
(`str`). `Filters` runs the rules in order, stops at the first drop and counts drops and removed comments per
rule in a `FilterReport`. Thresholds that differ by source are keyed by `Post.source`; released BLIFT rows
are Reddit posts and use Reddit's thresholds.
"""

from __future__ import annotations

import dataclasses
import re
import stat
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bl_data.comment_dedup import near_duplicate_keep
from bl_data.records import Comment, Post
from bl_data.sources._common import file_sha256


class Rule(Protocol):
    name: str

    def apply(self, post: Post) -> Post | str: ...


def _keep_comments(post: Post, keep: Callable[[Comment], bool]) -> Post:
    kept = [c for c in post.comments if keep(c)]
    return post if len(kept) == len(post.comments) else dataclasses.replace(post, comments=kept)


PLACEHOLDER_NSFW_WORDS = frozenset({"nsfw", "porn", "porno", "xxx", "nude", "nudes", "fuck", "fucking"})
"""A stand-in only. The paper uses the LDNOOBW English list; pass it with `NsfwRule.from_file`."""


@dataclass(frozen=True)
class NsfwRule:
    """Drop posts marked `over_18`; remove comments containing a listed word or phrase.

    Matching is case-insensitive on whole words (a phrase matches its words separated by any whitespace).
    The default `words` is `PLACEHOLDER_NSFW_WORDS`, a few words standing in for the real list, which is not
    a dependency: load the LDNOOBW list (one word or phrase per line) with `NsfwRule.from_file(path)`.
    """

    words: frozenset[str] = PLACEHOLDER_NSFW_WORDS
    name: str = "nsfw"

    @classmethod
    def from_file(cls, path: Path) -> NsfwRule:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return cls(words=frozenset(w.strip().lower() for w in lines if w.strip()))

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        """One regex matching any listed word or phrase as whole words."""
        alternatives = sorted(
            (r"\s+".join(map(re.escape, w.split())) for w in self.words), key=len, reverse=True
        )
        body = "|".join(alternatives) if alternatives else r"(?!)"
        return re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)

    def apply(self, post: Post) -> Post | str:
        if post.over_18:
            return "post marked over_18"
        return _keep_comments(post, lambda c: self.pattern.search(c.text) is None)


@dataclass(frozen=True)
class BotRule:
    """Drop posts by bots and remove comments by bots: an author in `names` or ending in a suffix.

    Names compare case-insensitively. The suffix "bot" also matches humans such as "Talbot"; narrow it if
    that matters.
    """

    names: frozenset[str] = frozenset({"automoderator"})
    suffixes: tuple[str, ...] = ("bot",)
    name: str = "bot"

    @cached_property
    def _lowered(self) -> tuple[frozenset[str], tuple[str, ...]]:
        return frozenset(n.lower() for n in self.names), tuple(s.lower() for s in self.suffixes)

    def is_bot(self, author: str | None) -> bool:
        if not author:
            return False
        names, suffixes = self._lowered
        return author.lower() in names or author.lower().endswith(suffixes)

    def apply(self, post: Post) -> Post | str:
        if self.is_bot(post.author):
            return f"bot author {post.author!r}"
        return _keep_comments(post, lambda c: not self.is_bot(c.author))


@dataclass(frozen=True)
class DeletedRule:
    """Drop posts whose title or author is a marker, and remove comments whose text or author is one."""

    markers: frozenset[str] = frozenset({"[deleted]", "[removed]"})
    name: str = "deleted"

    def apply(self, post: Post) -> Post | str:
        if post.title.strip() in self.markers or post.author in self.markers:
            return "post deleted or removed"
        return _keep_comments(
            post, lambda c: c.text.strip() not in self.markers and c.author not in self.markers
        )


@dataclass
class DuplicateMediaRule:
    """Drop a post whose media has the content hash of an earlier post's media (the first one seen stays).

    The hash is `hashes[post.id]` when given, else `media_hashes[str(post.media_path)]` (from a parallel
    hashing pass, see `hash_media`), else the SHA-256 of `post.media_path` (`OSError` when it cannot be
    read); a post with neither passes. `first` (hash -> the post that keeps it, decided over the whole input
    by `first_posts`) makes the verdict independent of which posts this instance sees (parts of a split
    input); without it the rule remembers the hashes it has seen, so one instance must see every post.
    """

    hashes: Mapping[str, str] = field(default_factory=dict)
    media_hashes: Mapping[str, str] = field(default_factory=dict)
    first: Mapping[str, str] = field(default_factory=dict)
    # the digests of `media_hashes` that more than one file has; None: unknown. A post whose digest is in
    # `media_hashes` and not here has content no other file has: it passes and nothing is remembered
    repeated: Container[str] | None = None
    name: str = "duplicate_media"
    seen: dict[str, str] = field(default_factory=dict, init=False)  # hash -> first post id

    def digest(self, post: Post) -> str | None:
        """The post's media hash (None without media); `OSError` when it must be read and cannot."""
        digest = self.hashes.get(post.id)
        if digest is None and post.media_path is not None:
            digest = self.media_hashes.get(str(post.media_path))
            if digest is None:  # an unreadable file raises: a failure, not a duplicate
                digest = file_sha256(post.media_path)
        return digest

    def apply(self, post: Post) -> Post | str:
        digest = self.digest(post)
        if digest is None or self._unique(post, digest):
            return post
        first = self.first.get(digest) or self.seen.setdefault(digest, post.id)
        return post if first == post.id else f"same media as post {first!r}"

    def _unique(self, post: Post, digest: str) -> bool:
        return (
            self.repeated is not None
            and digest not in self.repeated
            and post.id not in self.hashes
            and str(post.media_path) in self.media_hashes
        )

    def remember(self, post: Post) -> None:
        """Note the media of a post an earlier run kept, so a rerun drops the same later duplicates."""
        self.apply(post)


@dataclass(frozen=True)
class CommentWordsRule:
    """Remove comments whose word count (whitespace-separated) is outside [min, max] for the post's source.

    Paper: Reddit keeps >= 3 words; YouTube keeps 4-100 words. `None` means no bound.
    """

    bounds: Mapping[str, tuple[int | None, int | None]] = field(
        default_factory=lambda: {"reddit": (3, None), "blift": (3, None), "youtube": (4, 100)}
    )
    name: str = "comment_words"

    def apply(self, post: Post) -> Post | str:
        low, high = self.bounds.get(post.source, (None, None))

        def keep(comment: Comment) -> bool:
            n = len(comment.text.split())
            return (low is None or n >= low) and (high is None or n <= high)

        return _keep_comments(post, keep)


@dataclass(frozen=True)
class NearDuplicateCommentsRule:
    """Remove near-duplicate comments: TF-IDF cosine similarity >= the source's threshold.

    TF-IDF is fitted on the post's own comments (scikit-learn defaults: lowercase, words of 2+ characters,
    smoothed idf, l2 norm). Comments are visited most-liked first (ties: earlier first) and one is kept when
    it is below the threshold against every comment kept so far, so each group keeps its most-liked member.
    Kept comments stay in their input order. Paper thresholds: 0.6 Reddit, 0.7 YouTube.

    Memory and time stay linear in the comments (`bl_data.comment_dedup`, exact): only the `max_candidates`
    most-liked comments are visited (None: all), and the others are removed too (a sample quotes the top
    five; the IDF still counts every comment). A post with more than `inline_limit` comments is filtered in
    a child process, so the main process's memory never holds the work and a child that dies (out of memory)
    fails that post only.
    """

    thresholds: Mapping[str, float] = field(
        default_factory=lambda: {"reddit": 0.6, "blift": 0.6, "youtube": 0.7}
    )
    max_candidates: int | None = 10_000
    inline_limit: int = 20_000
    name: str = "near_duplicate_comments"

    def __post_init__(self) -> None:
        bad = {source: t for source, t in self.thresholds.items() if not 0 < t <= 1}
        if bad:
            raise ValueError(f"NearDuplicateCommentsRule thresholds must be in (0, 1], got {bad}")

    def apply(self, post: Post) -> Post | str:
        threshold = self.thresholds.get(post.source)
        if threshold is None or len(post.comments) < 2:
            return post
        texts, likes = [c.text for c in post.comments], [c.likes for c in post.comments]
        args = (texts, likes, threshold, self.max_candidates)
        kept = near_duplicate_keep(*args) if len(texts) <= self.inline_limit else _in_child(*args)
        if len(kept) == len(post.comments):
            return post
        return dataclasses.replace(post, comments=[post.comments[i] for i in kept])


def _in_child(*args: Any) -> np.ndarray:
    """`near_duplicate_keep(*args)` in a fresh process; a process that dies is a `RuntimeError` saying so."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        try:
            return child.submit(near_duplicate_keep, *args).result()
        except BrokenProcessPool:
            raise RuntimeError(
                f"the near-duplicate comment filter's process died on {len(args[0])} comments "
                "(killed, e.g. out of memory: lower NearDuplicateCommentsRule.max_candidates)"
            ) from None


def comment_similarity(texts: Sequence[str]) -> np.ndarray:
    """(n, n) TF-IDF cosine similarity of `texts`; all zeros when no text has a word of 2+ characters.
    Quadratic in memory: for tests and small sets (the rule uses `bl_data.comment_dedup`)."""
    # imported on first use: scikit-learn takes seconds to import, and the media workers never filter
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    try:
        matrix = TfidfVectorizer().fit_transform(texts)
    except ValueError:  # "empty vocabulary": nothing to compare
        return np.zeros((len(texts), len(texts)))
    return cosine_similarity(matrix)


@dataclass(frozen=True)
class MinCommentsRule:
    """Drop posts with fewer than `min_comments` comments left (paper: 2)."""

    min_comments: int = 2
    name: str = "min_comments"

    def apply(self, post: Post) -> Post | str:
        if len(post.comments) < self.min_comments:
            return f"{len(post.comments)} comments < {self.min_comments}"
        return post


@dataclass(frozen=True)
class MaxDurationRule:
    """Drop videos longer than `max_seconds` (paper: 500 s). Images and unknown durations pass."""

    max_seconds: float = 500.0
    name: str = "max_duration"

    def apply(self, post: Post) -> Post | str:
        if post.is_video and post.duration is not None and post.duration > self.max_seconds:
            return f"duration {post.duration:g} s > {self.max_seconds:g} s"
        return post


@dataclass(frozen=True)
class MinViewsRule:
    """Drop posts of `sources` with at most `min_views` views or an unknown count (paper: YouTube, 10,000)."""

    min_views: int = 10_000
    sources: frozenset[str] = frozenset({"youtube"})
    name: str = "min_views"

    def apply(self, post: Post) -> Post | str:
        if post.source not in self.sources:
            return post
        if post.view_count is None or post.view_count <= self.min_views:
            return f"{post.view_count} views <= {self.min_views}"
        return post


def hash_media(paths: Sequence[Path], workers: int) -> dict[str, str]:
    """`{str(path): sha256}` of the readable regular files among `paths`, hashed in `workers` threads
    (hashlib releases the GIL); any other path is left out (the import or filter stage reports it). A named
    pipe is never opened."""
    from concurrent.futures import ThreadPoolExecutor

    def one(path: Path) -> str | None:
        try:
            return file_sha256(path) if stat.S_ISREG(path.stat().st_mode) else None
        except OSError:
            return None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        digests = list(pool.map(one, paths))
    return {str(p): d for p, d in zip(paths, digests, strict=True) if d is not None}


def first_posts(
    posts: Iterable[Post],
    rules: Sequence[Rule],
    media_hashes: Mapping[str, str],
    repeated: Container[str] | None = None,
) -> dict[str, str]:
    """hash -> id of the first post (in `posts`' order) with that media that passes the rules before
    `DuplicateMediaRule` in `rules`: the post the rule keeps when it sees the whole input in one pass (only
    the `repeated` hashes, when given: see `DuplicateMediaRule`)."""
    index = next(i for i, rule in enumerate(rules) if isinstance(rule, DuplicateMediaRule))
    dedupe = DuplicateMediaRule(media_hashes=media_hashes, repeated=repeated)
    ids: set[str] = set()
    for post in posts:
        if post.id in ids:  # a repeated id fails as a duplicate before the rules
            continue
        ids.add(post.id)
        kept: Post | str = post
        for rule in rules[:index]:
            kept = rule.apply(kept)
            if isinstance(kept, str):
                break
        else:
            if kept.media_path is None or str(kept.media_path) in media_hashes:  # else: never read here
                dedupe.apply(kept)
    return dedupe.seen


def default_rules() -> list[Rule]:
    """Every rule with the paper's settings, in the paper's order (PAPER.md §2.1)."""
    return [
        NsfwRule(),
        BotRule(),
        DeletedRule(),
        DuplicateMediaRule(),
        CommentWordsRule(),
        NearDuplicateCommentsRule(),
        MinCommentsRule(),
        MaxDurationRule(),
        MinViewsRule(),
    ]


@dataclass
class FilterReport:
    """Posts in and kept, posts dropped per rule, and comments removed per rule."""

    posts_in: int = 0
    posts_kept: int = 0
    posts_dropped: Counter[str] = field(default_factory=Counter)
    comments_removed: Counter[str] = field(default_factory=Counter)

    def merge(self, other: FilterReport) -> None:
        """Add another report's counts (e.g. from another worker)."""
        self.posts_in += other.posts_in
        self.posts_kept += other.posts_kept
        self.posts_dropped.update(other.posts_dropped)
        self.comments_removed.update(other.comments_removed)

    def add(self, kept: Post | Dropped, removed: Counter[str]) -> None:
        """Count one post's outcome: kept or dropped, and the comments each rule removed."""
        self.posts_in += 1
        self.comments_removed.update(+removed)
        if isinstance(kept, Dropped):
            self.posts_dropped[kept.rule] += 1
        else:
            self.posts_kept += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "posts_in": self.posts_in,
            "posts_kept": self.posts_kept,
            "posts_dropped": dict(self.posts_dropped),
            "comments_removed": dict(self.comments_removed),
        }


@dataclass(frozen=True)
class Dropped:
    """A post a rule dropped, and why."""

    post_id: str
    rule: str
    reason: str


def apply_rules(post: Post, rules: Iterable[Rule]) -> tuple[Post | Dropped, Counter[str]]:
    """`post` after `rules` in order, or the first drop, and the comments each rule removed (counted nowhere);
    a rule's exception propagates."""
    removed: Counter[str] = Counter()
    for rule in rules:
        result = rule.apply(post)
        if isinstance(result, str):
            return Dropped(post.id, rule.name, result), removed
        removed[rule.name] += len(post.comments) - len(result.comments)
        post = result
    return post, removed


class Filters:
    """Runs `rules` (default: `default_rules()`) in order over posts and keeps a `FilterReport`."""

    def __init__(self, rules: Iterable[Rule] | None = None) -> None:
        self.rules = list(default_rules() if rules is None else rules)
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rule names must be unique, got {names}")
        self.report = FilterReport()

    def __call__(self, post: Post) -> Post | Dropped:
        """The post after every rule, or the first drop. A rule's exception propagates, and the post is then
        not counted (so `posts_in` stays `posts_kept` plus the drops)."""
        kept, removed = apply_rules(post, self.rules)
        self.report.add(kept, removed)
        return kept

    def central(self) -> int:
        """How many of the leading rules need state shared by every post (through the last one that remembers
        posts, duplicate media): an engine runs these in one place, the rest per post anywhere."""
        return max((i + 1 for i, rule in enumerate(self.rules) if hasattr(rule, "remember")), default=0)

    def remember(self, post: Post) -> None:
        """Show a post an earlier run kept to the rules that remember posts (duplicate media); not counted."""
        for rule in self.rules:
            remember = getattr(rule, "remember", None)
            if remember is not None:
                remember(post)

"""IMDb movie-review sentiment (Maas et al. 2011), text only: zero-shot over the label words, and 1-shot
with one training review in context."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..spec import Example, TaskSpec
from ._common import seeded

LABELS = ("positive", "negative")
_FOLDERS = {"pos": "positive", "neg": "negative"}
_PROMPT = 'Review: "{review}"\nIs the sentiment of this movie review positive or negative?'


def _reviews(root: Path, split: str) -> list[tuple[str, Path]]:
    """(label, file) for <split>/pos/*.txt and <split>/neg/*.txt, sorted by file."""
    return [
        (label, path)
        for folder, label in _FOLDERS.items()
        for path in sorted((root / split / folder).glob("*.txt"))
    ]


def _prompt(path: Path) -> str:
    # the release marks line breaks inside reviews with "<br />"
    return _PROMPT.format(review=" ".join(path.read_text(encoding="utf-8").replace("<br />", " ").split()))


def _zero_shot(root: Path) -> Iterator[Example]:
    for label, path in _reviews(root, "test"):
        yield Example(
            id=f"{path.parent.name}/{path.stem}", prompt=_prompt(path), target=label, choices=list(LABELS)
        )


def _one_shot(root: Path) -> Iterator[Example]:
    """The shot is a training review drawn per test review by a generator seeded with its id."""
    train = _reviews(root, "train")
    for label, path in _reviews(root, "test"):
        example_id = f"{path.parent.name}/{path.stem}"
        shot_label, shot_path = seeded("imdb_1shot", example_id).choice(train)
        yield Example(
            id=example_id, prompt=_prompt(path), target=label, shots=[(_prompt(shot_path), shot_label, [])]
        )


_LAYOUT = "test/pos/*.txt + test/neg/*.txt (the aclImdb_v1 release){extra}"

SPECS = [
    TaskSpec(
        name="imdb",
        group="text",
        protocol="logprob",
        metric="accuracy",
        loader=_zero_shot,
        layout=_LAYOUT.format(extra=""),
        subdir="imdb",
        paper_metric_key="accuracy",
    ),
    TaskSpec(
        name="imdb_1shot",
        group="text",
        protocol="kshot",
        metric="accuracy",
        loader=_one_shot,
        layout=_LAYOUT.format(extra=" + train/pos/*.txt + train/neg/*.txt for the in-context review"),
        subdir="imdb",
        parser="sentiment",
        shots=1,
        max_new_tokens=8,
        paper_metric_key="accuracy",
        notes="The answer is read as the first 'positive'/'negative' it mentions; the paper does not say how "
        "its shot was chosen.",
    ),
]

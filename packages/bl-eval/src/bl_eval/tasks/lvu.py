"""LVU (Wu & Krähenbühl 2021): seven classification tasks (zero-shot over the class names) and two
regression tasks (like ratio, view count; MSE) on the lvu_1.0 release's test splits."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

from ..spec import Example, TaskSpec
from ._common import VIDEO_EXTS, MediaIndex, choice_prompt, read_text, words

QUESTIONS = {
    "relationship": "What is the relationship between the main characters in this movie clip?",
    "way_speaking": "How are the characters speaking in this movie clip?",
    "scene": "Where does this movie clip take place?",
    "director": "Who directed the movie this clip is from?",
    "genre": "What is the genre of the movie this clip is from?",
    "writer": "Who wrote the movie this clip is from?",
    "year": "In which period was the movie this clip is from released?",
}
_LIKE_RATIO = (
    "<video>\nWhat share of this movie clip's YouTube ratings are likes? Answer with a number from 0 to 10, "
    "where 10 means every rating is a like."
)
_VIEW_COUNT = "<video>\nHow many times has this movie clip been viewed on YouTube? Answer with a number."


def _rows(root: Path, task: str, split: str = "test") -> list[list[str]]:
    """The space-separated rows of `lvu_1.0/<task>/<split>.csv` after its header line."""
    path = root / "lvu_1.0" / task / f"{split}.csv"
    return [line.split() for line in read_text(path).splitlines()[1:] if line.strip()]


def _classes(root: Path, task: str) -> dict[int, str]:
    """Class index -> label words, from every split present (the label name column, else the index)."""
    names: dict[int, str] = {}
    for split in ("train", "val", "test"):
        if (root / "lvu_1.0" / task / f"{split}.csv").exists():
            for row in _rows(root, task, split):
                names.setdefault(int(row[0]), words(" ".join(row[1:-2])) or row[0])
    return dict(sorted(names.items()))


def _video(videos: MediaIndex, row: list[str]) -> Path:
    return videos.find(row[-2])


def _classification(task: str) -> Callable[[Path], Iterator[Example]]:
    def load(root: Path) -> Iterator[Example]:
        classes = _classes(root, task)
        labels = list(classes.values())
        videos = MediaIndex(root / "videos", VIDEO_EXTS, ".mp4")
        for i, row in enumerate(_rows(root, task)):
            yield Example(
                id=f"{i:05d}_{row[-2]}",
                prompt=choice_prompt("<video>", QUESTIONS[task], labels),
                target=classes[int(row[0])],
                media=[_video(videos, row)],
                choices=labels,
                meta={"youtube_id": row[-2], "imdb_id": row[-1]},
            )

    return load


def _like_ratio(root: Path) -> Iterator[Example]:
    """Rows "<likes> <dislikes> <youtube_id> <imdb_id>"; target = 10 * likes / (likes + dislikes)."""
    videos = MediaIndex(root / "videos", VIDEO_EXTS, ".mp4")
    for i, row in enumerate(_rows(root, "like_ratio")):
        likes, dislikes = float(row[0]), float(row[1])
        yield Example(
            id=f"{i:05d}_{row[-2]}",
            prompt=_LIKE_RATIO,
            target=10.0 * likes / (likes + dislikes),
            media=[_video(videos, row)],
            meta={"youtube_id": row[-2], "imdb_id": row[-1]},
        )


def _view_count(root: Path) -> Iterator[Example]:
    """Rows "<views> <youtube_id> <imdb_id>"; target = log(views)."""
    videos = MediaIndex(root / "videos", VIDEO_EXTS, ".mp4")
    for i, row in enumerate(_rows(root, "view_count")):
        yield Example(
            id=f"{i:05d}_{row[-2]}",
            prompt=_VIEW_COUNT,
            target=math.log(float(row[0])),
            media=[_video(videos, row)],
            meta={"youtube_id": row[-2], "imdb_id": row[-1]},
        )


_LAYOUT = (
    "lvu_1.0/{task}/test.csv (the lvu_1.0.tar.gz release: a header line, then space-separated rows {row}) + "
    "videos/<youtube_id>.mp4 (any video extension)"
)
_CLASS_ROW = "'<class index> <class name> <youtube_id> <imdb_id>'"
_NOTES = (
    "The paper's LVU numbers use the Video4096 protocol (a GPT-3.5 story of the video plus a classifier); "
    "here the model sees the video only."
)


def _spec(task: str) -> TaskSpec:
    if task in QUESTIONS:
        return TaskSpec(
            name=f"lvu_{task}",
            group="lvu",
            protocol="logprob",
            metric="accuracy",
            loader=_classification(task),
            layout=_LAYOUT.format(task=task, row=_CLASS_ROW),
            subdir="lvu",
            paper_metric_key="accuracy",
            notes=_NOTES + " Class names come from the csv's name column (underscores read as spaces); rows "
            "without one fall back to the class index.",
        )
    like = task == "like_ratio"
    return TaskSpec(
        name=f"lvu_{task}",
        group="lvu",
        protocol="generate",
        metric="mse",
        loader=_like_ratio if like else _view_count,
        layout=_LAYOUT.format(
            task=task,
            row="'<likes> <dislikes> <youtube_id> <imdb_id>'" if like else "'<views> <youtube_id> <imdb_id>'",
        ),
        subdir="lvu",
        parser="number" if like else "log_count",
        max_new_tokens=16,
        higher_is_better=False,
        paper_metric_key="mse",
        notes=_NOTES
        + (
            " Target = 10 * likes / (likes + dislikes) as in the LVU code."
            if like
            else " Target = ln(views) as in the LVU code; the answer's count is logged the same way."
        ),
    )


SPECS = [
    _spec(task)
    for task in (
        "scene",
        "way_speaking",
        "relationship",
        "like_ratio",
        "view_count",
        "director",
        "genre",
        "writer",
        "year",
    )
]

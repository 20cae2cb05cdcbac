"""HVU (Diba et al. 2020) validation set: multi-label tagging per category, mAP over the category's tags.

Each video's tags are scored by the `logprob` protocol (every tag of the category is a choice); the metric
ranks the videos per tag by those scores. As MMAction2's `HVUDataset.evaluate` (v0.24.1, the last release
with HVU), a category is scored only over the videos that have at least one tag of it: a video without one
is no example of that category. "overall" is the mean of the six category mAPs (the paper's
Behavior-LLaVA overall, 54.14, is exactly that mean).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from ..spec import Example, TaskSpec
from ._common import VIDEO_EXTS, MediaIndex, first_existing, read_csv, words

CATEGORIES = ("scene", "object", "action", "event", "attribute", "concept")
_QUESTION = "<video>\nName one {category} tag that describes this video."


def _vocabulary(root: Path) -> dict[str, dict[str, str]]:
    """category -> {raw tag -> label words}, from HVU_Tags_Categories_V1.0.csv (columns Tag, Category)."""
    vocab: dict[str, dict[str, str]] = {c: {} for c in CATEGORIES}
    for row in read_csv(first_existing(root, "HVU_Tags_Categories_V1.0.csv")):
        category = row["Category"].casefold()
        if category in vocab:
            vocab[category][row["Tag"]] = words(row["Tag"])
    return vocab


def _videos(root: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """(id, video, raw tags) per row of HVU_Val_V1.0.csv (columns Tags '|'-separated, youtube_id,
    time_start, time_end); the clip is <youtube_id>_<start:06d>_<end:06d>.mp4 or <youtube_id>.*."""
    videos = MediaIndex(root / "videos", VIDEO_EXTS, ".mp4")
    for row in read_csv(first_existing(root, "HVU_Val_V1.0.csv")):
        ytid, start, end = row["youtube_id"], int(float(row["time_start"])), int(float(row["time_end"]))
        clip = f"{ytid}_{start:06d}_{end:06d}"
        yield clip, videos.find(clip, ytid), [t for t in row["Tags"].split("|") if t]


def _examples(root: Path, categories: tuple[str, ...], grouped: bool) -> Iterator[Example]:
    vocab = _vocabulary(root)
    for clip, video, tags in _videos(root):
        for category in categories:
            labels = [vocab[category][t] for t in tags if t in vocab[category]]
            if not labels:  # MMAction2's rule: the video has no tag of this category
                continue
            yield Example(
                id=f"{clip}/{category}" if grouped else clip,
                prompt=_QUESTION.format(category=category),
                target={"group": category, "labels": labels} if grouped else labels,
                media=[video],
                choices=list(vocab[category].values()),
            )


def _loader(categories: tuple[str, ...], grouped: bool) -> Callable[[Path], Iterator[Example]]:
    return lambda root: _examples(root, categories, grouped)


_LAYOUT = (
    "HVU_Val_V1.0.csv (columns Tags ('|'-separated), youtube_id, time_start, time_end) + "
    "HVU_Tags_Categories_V1.0.csv (columns Tag, Category) + videos/<youtube_id>_<start:06d>_<end:06d>.mp4 "
    "(trimmed clips as the HVU downloader names them; videos/<youtube_id>.* also accepted)"
)
_NOTES = (
    "Every tag of the category is scored per video (many choices: e.g. ~1,700 objects), so this task is "
    "costly; use --limit for a quick look. A category is scored over the videos with at least one tag of it "
    "(MMAction2's HVU protocol); mAP macro-averages over the tags present in those videos."
)


SPECS = [
    *(
        TaskSpec(
            name=f"hvu_{category}",
            group="hvu",
            protocol="logprob",
            metric="mean_average_precision",
            loader=_loader((category,), grouped=False),
            layout=_LAYOUT,
            subdir="hvu",
            paper_metric_key="map",
            notes=_NOTES,
        )
        for category in CATEGORIES
    ),
    TaskSpec(
        name="hvu_overall",
        group="hvu",
        protocol="logprob",
        metric="grouped_mean_average_precision",
        loader=_loader(CATEGORIES, grouped=True),
        layout=_LAYOUT,
        subdir="hvu",
        paper_metric_key="map",
        notes="One example per (video, category); the mean of the six category mAPs. " + _NOTES,
    ),
]

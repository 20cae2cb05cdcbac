"""Image and video memorability (Henry / LAMBDA protocol): the model writes a score "00"-"99", which is
compared with the ground-truth memorability by Spearman's ρ."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..spec import Example, TaskSpec
from ._common import IMAGE_EXTS, VIDEO_EXTS, MediaIndex, first_existing, read_csv, read_json, read_text

_QUESTION = (
    "How memorable is this {kind}? Answer with a two-digit score from 00 (instantly forgotten) to 99 "
    "(remembered by everyone who sees it)."
)


def _prompt(video: bool) -> str:
    kind = "video" if video else "image"
    return f"<{kind}>\n{_QUESTION.format(kind=kind)}"


def _example(name: str, score: float, media: Path, video: bool) -> Example:
    return Example(id=name, prompt=_prompt(video), target=score, media=[media])


def _lamem(root: Path) -> Iterator[Example]:
    """splits/test_1.txt: "<image> <score>" per line; images in images/."""
    for line in read_text(root / "splits" / "test_1.txt").splitlines():
        if line.strip():
            name, score = line.split()[:2]
            yield _example(name, float(score), root / "images" / name, video=False)


def _column(row: dict[str, str], candidates: Sequence[str]) -> str:
    for name in candidates:
        if row.get(name):
            return row[name]
    raise KeyError(f"none of the columns {', '.join(candidates)} in {sorted(row)}")


def _csv_loader(
    csv_names: Sequence[str], id_columns: Sequence[str], score_columns: Sequence[str], video: bool
) -> Callable[[Path], Iterator[Example]]:
    """A CSV with an id/file column and a score column; the media are found by name anywhere below."""

    def load(root: Path) -> Iterator[Example]:
        media = MediaIndex(root, VIDEO_EXTS if video else IMAGE_EXTS, ".mp4" if video else "")
        for row in read_csv(first_existing(root, *csv_names)):
            name = _column(row, id_columns)
            yield _example(name, float(_column(row, score_columns)), media.find(name), video)

    return load


def _memento10k(root: Path) -> Iterator[Example]:
    """memento_test_data.json (else memento_val_data.json): [{"filename", "mem_score", ...}]."""
    videos = MediaIndex(root, VIDEO_EXTS)
    for item in read_json(first_existing(root, "memento_test_data.json", "memento_val_data.json")):
        yield _example(item["filename"], float(item["mem_score"]), videos.find(item["filename"]), video=True)


def _lambda(root: Path) -> Iterator[Example]:
    """bs_test_a.json: Henry's LLaVA-format test samples, [{"id", "video", "conversations": [human, gpt]}],
    the gpt turn being the two-digit score; the human turn (the Henry prompt) is kept as the prompt."""
    videos = MediaIndex(root / "videos", VIDEO_EXTS)
    for item in read_json(first_existing(root, "bs_test_a.json")):
        human, gpt = item["conversations"][0]["value"], item["conversations"][1]["value"]
        prompt = human if "<video>" in human else f"<video>\n{human}"
        yield Example(
            id=str(item["id"]),
            prompt=prompt,
            target=int(gpt.strip()) / 100.0,
            media=[videos.find(item["video"])],
        )


def _spec(
    name: str, loader: Callable[[Path], Iterator[Example]], layout: str, video: bool, notes: str = ""
) -> TaskSpec:
    return TaskSpec(
        name=name,
        group="video_memorability" if video else "image_memorability",
        protocol="generate",
        metric="spearman",
        loader=loader,
        layout=layout,
        subdir=name,
        parser="memorability",
        max_new_tokens=8,
        paper_metric_key="spearman",
        notes=notes,
    )


SPECS = [
    _spec("lamem", _lamem, "splits/test_1.txt ('<image> <score>' per line) + images/<image>", video=False),
    _spec(
        "memcat",
        _csv_loader(
            ("data/memcat_image_data.csv", "memcat_image_data.csv"),
            ("image_file",),
            ("memorability_w_fa_correction", "memorability_wo_fa_correction"),
            video=False,
        ),
        "data/memcat_image_data.csv (columns image_file, ..., memorability_w_fa_correction) + the images "
        "anywhere below (images/<category>/<subcategory>/<image_file>)",
        video=False,
        notes="MemCat has no official test split: every image is scored (Henry used its own split).",
    ),
    _spec(
        "sun",
        _csv_loader(("scores.csv",), ("image", "filename"), ("score", "memorability"), video=False),
        "scores.csv (columns image, score: the hit rate of Isola et al. 2011) + the images anywhere below",
        video=False,
        notes="The SUN memorability data is released as MATLAB files; export its 2,222 target images and "
        "scores to scores.csv (layout assumed, not a published file).",
    ),
    _spec(
        "memento10k",
        _memento10k,
        "memento_test_data.json (or memento_val_data.json; [{filename, mem_score, ...}]) + the videos anywhere "
        "below",
        video=True,
        notes="Memento10k's test scores are withheld by the authors; with only the val file the val split is "
        "scored.",
    ),
    _spec(
        "videomem",
        _csv_loader(
            ("ground-truth_test-set.csv", "ground-truth_dev-set.csv"),
            ("video",),
            ("short-term_memorability",),
            video=True,
        ),
        "ground-truth_test-set.csv or ground-truth_dev-set.csv (columns video, short-term_memorability, "
        "nb_short-term_annotations, long-term_memorability, ...) + sources/<video> (MediaEval 2018 VideoMem)",
        video=True,
        notes="Short-term memorability is the target.",
    ),
    _spec(
        "mediaeval",
        _csv_loader(
            ("scores.csv", "ground_truth.csv"),
            ("video_id", "video"),
            ("scores_normalized_short_term", "scores_raw_short_term", "short-term_memorability"),
            video=True,
        ),
        "scores.csv or ground_truth.csv (a video id column video_id|video and a short-term score column "
        "scores_normalized_short_term|scores_raw_short_term|short-term_memorability) + videos named by id below",
        video=True,
        notes="MediaEval Predicting Media Memorability (TRECVid videos); its yearly releases differ in file "
        "names, so the layout is matched by column names. Which edition the paper used is not stated.",
    ),
    _spec(
        "lambda",
        _lambda,
        "bs_test_a.json (Henry's LLaVA-format test samples: id, video, conversations with the score as the "
        "answer) + videos/<video>",
        video=True,
        notes="File name from the released Henry code (data/bs_test_a.json); the prompt is the file's own "
        "human turn.",
    ),
]

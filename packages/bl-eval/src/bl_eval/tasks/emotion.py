"""Video and image emotion: zero-shot by the log-probabilities of the label words (the paper's protocol)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..spec import Example, TaskSpec
from ._common import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    MediaIndex,
    choice_prompt,
    first_existing,
    read_csv,
    read_json,
    read_text,
)

VIDEOEMOTION8 = ("anger", "anticipation", "disgust", "fear", "joy", "sadness", "surprise", "trust")
CAER = ("anger", "disgust", "fear", "happy", "neutral", "sad", "surprise")
EKMAN6 = ("anger", "disgust", "fear", "joy", "sadness", "surprise")
MIKELS8 = ("amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness")
EMOTION6 = ("anger", "disgust", "fear", "joy", "sadness", "surprise")
_ABSTRACT_COLUMNS = {"content": "contentment", "sad": "sadness"}

_EVOKE_VIDEO = "Which emotion does this video evoke in its viewers?"
_EVOKE_IMAGE = "Which emotion does this image evoke in its viewers?"
_CAER_QUESTION = "Which emotion do the people in this video show?"


def _class_folders(root: Path, labels: Sequence[str], exts: Sequence[str]) -> Iterator[tuple[str, Path]]:
    """(label, file) for the media files in `root/<class>/` folders, class names matched case-insensitively;
    every label needs its folder."""
    folders = {p.name.casefold(): p for p in root.iterdir() if p.is_dir()}
    missing = [label for label in labels if label not in folders]
    if missing:
        raise FileNotFoundError(f"{root}: no class folder for {', '.join(missing)}")
    for label in labels:
        for path in sorted(folders[label].rglob("*")):
            if path.suffix.lower() in exts and path.is_file():
                yield label, path


def _folder_loader(
    labels: Sequence[str], question: str, video: bool, split: str | None = None
) -> Callable[[Path], Iterator[Example]]:
    """Class folders below `root` (or below `root/<split>` when `split` is given and that folder exists)."""
    tag, exts = ("<video>", VIDEO_EXTS) if video else ("<image>", IMAGE_EXTS)

    def load(root: Path) -> Iterator[Example]:
        base = root / split if split and (root / split).is_dir() else root
        for label, path in _class_folders(base, labels, exts):
            yield Example(
                id=path.relative_to(base).as_posix(),
                prompt=choice_prompt(tag, question, labels),
                target=label,
                media=[path],
                choices=list(labels),
            )

    return load


def _abstract(root: Path) -> Iterator[Example]:
    """ABSTRACT_groundTruth.csv: one row per image, one vote count per emotion; label = most votes (ties
    are left out, as they have no single label)."""
    images = MediaIndex(root, IMAGE_EXTS)
    for row in read_csv(first_existing(root, "ABSTRACT_groundTruth.csv")):
        name = next(iter(row.values()))
        votes = {
            _ABSTRACT_COLUMNS.get(k.casefold(), k.casefold()): float(v) for k, v in list(row.items())[1:] if v
        }
        best = max(votes.values())
        winners = [label for label, count in votes.items() if count == best]
        if len(winners) != 1 or winners[0] not in MIKELS8:
            continue
        yield Example(
            id=name,
            prompt=choice_prompt("<image>", _EVOKE_IMAGE, MIKELS8),
            target=winners[0],
            media=[images.find(name)],
            choices=list(MIKELS8),
        )


def _emotion6(root: Path) -> Iterator[Example]:
    """ground_truth.txt (tab-separated, header line): image path, valence, arousal, then the probability of
    anger, disgust, fear, joy, sadness, surprise, neutral. Label = the image's category folder
    ("joy/12.jpg" -> joy), else the most probable of the six emotions."""
    lines = read_text(first_existing(root, "ground_truth.txt")).splitlines()[1:]
    for line in lines:
        cells = line.replace("'", "").split("\t")
        if len(cells) < 9:
            continue
        name = cells[0].strip()
        folder = Path(name).parent.name.casefold()
        if folder in EMOTION6:
            label = folder
        else:
            probs = [float(c) for c in cells[3:9]]
            label = EMOTION6[probs.index(max(probs))]
        yield Example(
            id=name,
            prompt=choice_prompt("<image>", _EVOKE_IMAGE, EMOTION6),
            target=label,
            media=[root / "images" / name],
            choices=list(EMOTION6),
        )


def _emoset(root: Path) -> Iterator[Example]:
    """test.json: a list of [emotion, image path, annotation path], paths relative to the EmoSet root."""
    for label, image, _annotation in read_json(first_existing(root, "test.json")):
        yield Example(
            id=Path(image).stem,
            prompt=choice_prompt("<image>", _EVOKE_IMAGE, MIKELS8),
            target=label.casefold(),
            media=[root / image],
            choices=list(MIKELS8),
        )


def _spec(
    name: str, group: str, loader: Callable[[Path], Iterator[Example]], layout: str, notes: str = ""
) -> TaskSpec:
    return TaskSpec(
        name=name,
        group=group,
        protocol="logprob",
        metric="accuracy",
        loader=loader,
        layout=layout,
        subdir=name,
        paper_metric_key="accuracy",
        notes=notes,
    )


SPECS = [
    _spec(
        "videoemotion8",
        "video_emotion",
        _folder_loader(VIDEOEMOTION8, _EVOKE_VIDEO, video=True),
        "<Class>/*.mp4|avi|... : the release's eight class folders Anger, Anticipation, Disgust, Fear, Joy, "
        "Sadness, Surprise, Trust (names case-insensitive) holding the videos",
        "Every video in the class folders is evaluated; the release's 10 train/test splits are not applied "
        "(for one split, keep only its test videos in the folders).",
    ),
    _spec(
        "caer",
        "video_emotion",
        _folder_loader(CAER, _CAER_QUESTION, video=True, split="test"),
        "test/<Class>/*.avi : CAER's test split, class folders Anger, Disgust, Fear, Happy, Neutral, Sad, "
        "Surprise (a root with the class folders directly is accepted too)",
    ),
    _spec(
        "ekman6",
        "video_emotion",
        _folder_loader(EKMAN6, _EVOKE_VIDEO, video=True, split="test"),
        "test/<class>/*.mp4 (or <class>/*.mp4): class folders anger, disgust, fear, joy, sadness, surprise",
        "Ekman-6 is distributed as class folders of videos; the split used by the paper is not published, "
        "so every video under the folders is evaluated.",
    ),
    _spec(
        "iapsa8",
        "image_emotion",
        _folder_loader(MIKELS8, _EVOKE_IMAGE, video=False),
        "<class>/*.jpg : IAPSa (Mikels' IAPS subset) images in class folders amusement, anger, awe, "
        "contentment, disgust, excitement, fear, sadness",
        "IAPS is licensed per lab and has no public archive layout; class folders are the common "
        "arrangement (Machajdik & Hanbury 2010 split the images by their Mikels category).",
    ),
    _spec(
        "abstract",
        "image_emotion",
        _abstract,
        "ABSTRACT_groundTruth.csv (header: image, Amusement, Anger, Awe, Content, Disgust, Excitement, Fear, "
        "Sad; one row of vote counts per image) + the images anywhere below the folder",
        "Label = the emotion with most votes; images whose top vote is tied are left out.",
    ),
    _spec(
        "emotion6",
        "image_emotion",
        _emotion6,
        "ground_truth.txt (tab-separated, header; [image_filename] [valence] [arousal] then probabilities of "
        "anger, disgust, fear, joy, sadness, surprise, neutral) + images/<emotion>/<n>.jpg",
        "Label = the image's category folder (the six emotions; random = 16.67%).",
    ),
    _spec(
        "emoset",
        "image_emotion",
        _emoset,
        "test.json ([[emotion, 'image/<emotion>/<id>.jpg', 'annotation/<emotion>/<id>.json'], ...]) + "
        "image/ + annotation/ as released with EmoSet-118K",
    ),
]

"""Video ads: Pitt video ads (Hussain et al. 2017) topic, sentiment and action/reason, and the
persuasion-strategy videos.

Topic and sentiment are zero-shot over the label words (the abbreviations of Topics_List.txt /
Sentiments_List.txt). "Sentiment (clubbed)" scores the majority label among the 30 sentiments
(random 3.37%); "sentiment (all)" accepts any sentiment an annotator chose (random 14.3%). Action and
reason are LCBM's 1-of-30 retrieval: one annotator's statement among 29 drawn from other ads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

from ..spec import Example, Protocol, TaskSpec
from ._common import (
    VIDEO_EXTS,
    MediaIndex,
    choice_prompt,
    first_existing,
    read_json,
    read_text,
    seeded,
    words,
)

_ANNOTATIONS = Path("annotations_videos") / "video"
_LIST_LINE = re.compile(r"^\s*(\d+)\.?\s+(.*?)\s*\(ABBREVIATION:\s*\"?([^\")]+)\"?\)\s*$")
CANDIDATES = 30
_QUESTIONS = {
    "topic": "What is the topic of this video advertisement?",
    "sentiment": "Which sentiment does this video advertisement evoke?",
    "persuasion": "Which persuasion strategy does this video advertisement use?",
    "action": "What should the viewer do, according to this video advertisement?",
    "reason": "Why should the viewer do what this video advertisement suggests?",
}


def _label_list(path: Path) -> tuple[dict[int, str], dict[str, int]]:
    """Topics_List.txt / Sentiments_List.txt: `<id>[.] "<description>" (ABBREVIATION: "<abbr>")` lines
    -> {id: label words} and {abbreviation or description, lower-cased: id}."""
    labels: dict[int, str] = {}
    lookup: dict[str, int] = {}
    for line in read_text(path).splitlines():
        if match := _LIST_LINE.match(line.replace("\xa0", " ")):
            index, description, abbreviation = int(match.group(1)), match.group(2).strip('" '), match.group(3)
            labels[index] = words(abbreviation)
            lookup |= {abbreviation.casefold(): index, words(abbreviation).casefold(): index}
            lookup[description.casefold()] = index
    if not labels:
        raise ValueError(f'{path}: no \'<id> "..." (ABBREVIATION: "...")\' lines')
    return labels, lookup


def _ids(value: object, lookup: dict[str, int]) -> list[int]:
    """Label ids in an annotation: an id, an id string, an abbreviation or description, or a list of them."""
    if isinstance(value, list):
        return [i for v in value for i in _ids(v, lookup)]
    text = str(value).strip()
    if text.isdigit():
        return [int(text)]
    return [lookup[text.casefold()]] if text.casefold() in lookup else []


def _classify(kind: str, any_annotator: bool = False) -> Callable[[Path], Iterator[Example]]:
    """Topic or sentiment examples: the cleaned (majority) label, or with `any_annotator` every label an
    annotator chose (raw_result) plus the majority one."""
    title = "Topics" if kind == "topic" else "Sentiments"

    def load(root: Path) -> Iterator[Example]:
        labels, lookup = _label_list(root / _ANNOTATIONS / f"{title}_List.txt")
        cleaned = read_json(root / _ANNOTATIONS / "cleaned_result" / f"video_{title}_clean.json")
        raw = (
            read_json(root / _ANNOTATIONS / "raw_result" / f"video_{title}_raw.json") if any_annotator else {}
        )
        videos = MediaIndex(root / "videos", VIDEO_EXTS, ".mp4")
        choices = list(labels.values())
        for video_id, value in sorted(cleaned.items()):
            ids = _ids(value, lookup)
            if not ids or ids[0] not in labels:
                continue
            if any_annotator:
                accepted = {labels[i] for i in [*ids, *_ids(raw.get(video_id, []), lookup)] if i in labels}
                target: object = sorted(accepted)
            else:
                target = labels[ids[0]]
            yield Example(
                id=video_id,
                prompt=choice_prompt("<video>", _QUESTIONS[kind], choices),
                target=target,
                media=[videos.find(video_id)],
                choices=choices,
            )

    return load


def _statements(value: object) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [" ".join(str(s).split()) for s in items if str(s).strip()]


def _retrieval(kind: str) -> Callable[[Path], Iterator[Example]]:
    """1-of-30: the first annotator's statement for the ad among 29 statements of other ads, drawn and
    shuffled with a generator seeded by the task and the ad id."""
    file = "video_QA_Action_raw.json" if kind == "action" else "video_QA_Reason_raw.json"

    def load(root: Path) -> Iterator[Example]:
        answers = {
            k: s
            for k, v in read_json(root / _ANNOTATIONS / "raw_result" / file).items()
            if (s := _statements(v))
        }
        statements = sorted({s for values in answers.values() for s in values})
        videos = MediaIndex(root / "videos", VIDEO_EXTS, ".mp4")
        for video_id in sorted(answers):
            rng = seeded(f"ads_{kind}", video_id)
            own = set(answers[video_id])
            drawn = rng.sample(statements, CANDIDATES - 1 + len(own))
            candidates = [answers[video_id][0], *[s for s in drawn if s not in own][: CANDIDATES - 1]]
            rng.shuffle(candidates)
            yield Example(
                id=video_id,
                prompt=f"<video>\n{_QUESTIONS[kind]}",
                target=candidates.index(answers[video_id][0]),
                media=[videos.find(video_id)],
                choices=candidates,
            )

    return load


def _persuasion(root: Path) -> Iterator[Example]:
    """annotations.json: {video_id: strategy or [strategies]}; the label set is every strategy in the file;
    a prediction is right when it is one of the ad's strategies."""
    annotations = read_json(first_existing(root, "annotations.json"))
    strategies = {
        k: sorted({words(s) for s in (v if isinstance(v, list) else [v])}) for k, v in annotations.items()
    }
    labels = sorted({s for values in strategies.values() for s in values})
    videos = MediaIndex(root / "videos", VIDEO_EXTS, ".mp4")
    for video_id, target in sorted(strategies.items()):
        yield Example(
            id=video_id,
            prompt=choice_prompt("<video>", _QUESTIONS["persuasion"], labels),
            target=target,
            media=[videos.find(video_id)],
            choices=labels,
        )


def _pitt(*files: str) -> str:
    """The layout of a Pitt task: its files of annotations_videos.zip, and the downloaded videos."""
    return (
        f"annotations_videos/video/{{{', '.join(files)}}} (annotations_videos.zip as released) + "
        "videos/<youtube_id>.mp4 (the ads of final_video_id_list.csv)"
    )


_NOTES = (
    "Video only (the paper's 'video only' rows); the verbalisation/story variants add text to the prompt."
)


def _spec(
    name: str, protocol: Protocol, loader: Callable[[Path], Iterator[Example]], layout: str, notes: str
) -> TaskSpec:
    return TaskSpec(
        name=name,
        group="video_ads",
        protocol=protocol,
        metric="accuracy",
        loader=loader,
        layout=layout,
        subdir="persuasion" if name == "ads_persuasion" else "pitt_ads",
        paper_metric_key="accuracy",
        notes=f"{_NOTES} {notes}".strip(),
    )


SPECS = [
    _spec(
        "ads_topic",
        "logprob",
        _classify("topic"),
        _pitt("Topics_List.txt", "cleaned_result/video_Topics_clean.json"),
        "38 topics, the majority label.",
    ),
    _spec(
        "ads_sentiment_clubbed",
        "logprob",
        _classify("sentiment"),
        _pitt("Sentiments_List.txt", "cleaned_result/video_Sentiments_clean.json"),
        "The cleaned (majority) label among the 30 sentiments. Reading of the paper's column: its random "
        "baseline 3.37% is 1/30.",
    ),
    _spec(
        "ads_sentiment_all",
        "logprob",
        _classify("sentiment", any_annotator=True),
        _pitt(
            "Sentiments_List.txt",
            "cleaned_result/video_Sentiments_clean.json",
            "raw_result/video_Sentiments_raw.json",
        ),
        "Right when the answer is any sentiment an annotator chose (raw_result, matched by abbreviation or "
        "description; free-form words are skipped). Reading of the paper's column: random 14.3%.",
    ),
    _spec(
        "ads_persuasion",
        "logprob",
        _persuasion,
        "annotations.json ({video_id: strategy | [strategies]}) + videos/<video_id>.mp4",
        "Layout assumed: the persuasion-strategy video set (Video4096 paper) has no public file layout to "
        "follow; export its labels to annotations.json.",
    ),
    _spec(
        "ads_action",
        "retrieval",
        _retrieval("action"),
        _pitt("raw_result/video_QA_Action_raw.json"),
        "Retrieval of the first annotator's 'I should ...' statement among 30 (LCBM).",
    ),
    _spec(
        "ads_reason",
        "retrieval",
        _retrieval("reason"),
        _pitt("raw_result/video_QA_Reason_raw.json"),
        "Retrieval of the first annotator's 'because ...' statement among 30 (LCBM).",
    ),
]

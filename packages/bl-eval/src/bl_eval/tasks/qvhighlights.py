"""QVHighlights (Lei et al. 2021) validation set: moment retrieval and highlight detection, scored as
Moment-DETR's standalone evaluation scores them (see `bl_eval.metrics.moment_retrieval` and
`highlight_detection`). The model answers with time ranges, read by the `windows` parser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..spec import Example, TaskSpec
from ._common import VIDEO_EXTS, MediaIndex, first_existing, read_jsonl

_MOMENTS = (
    '<video>\nThe video is {duration:g} seconds long. Find the moments that match the query "{query}". '
    "Answer with their start and end times in seconds as 'start - end', the most relevant first."
)
_HIGHLIGHTS = (
    '<video>\nThe video is {duration:g} seconds long. Which moments are the best highlights for the query "{query}"? '
    "Answer with their start and end times in seconds as 'start - end', the best first."
)


def _lines(root: Path) -> Iterator[tuple[dict, Path]]:
    videos = MediaIndex(root / "videos", VIDEO_EXTS, ".mp4")
    for item in read_jsonl(first_existing(root, "highlight_val_release.jsonl")):
        yield item, videos.find(item["vid"])


def _moments(root: Path) -> Iterator[Example]:
    for item, video in _lines(root):
        yield Example(
            id=str(item["qid"]),
            prompt=_MOMENTS.format(duration=item["duration"], query=item["query"]),
            target={"relevant_windows": item["relevant_windows"]},
            media=[video],
        )


def _highlights(root: Path) -> Iterator[Example]:
    for item, video in _lines(root):
        yield Example(
            id=str(item["qid"]),
            prompt=_HIGHLIGHTS.format(duration=item["duration"], query=item["query"]),
            target={k: item[k] for k in ("duration", "relevant_clip_ids", "saliency_scores")},
            media=[video],
        )


_LAYOUT = (
    "highlight_val_release.jsonl (one query per line: qid, query, duration, vid, relevant_windows, "
    "relevant_clip_ids, saliency_scores) + videos/<vid>.mp4 (the 150 s clips, e.g. RoripwjYFp8_360.0_510.0.mp4)"
)

SPECS = [
    TaskSpec(
        name="qvhighlights_mr",
        group="behavior_ablation",
        protocol="generate",
        metric="moment_retrieval",
        loader=_moments,
        layout=_LAYOUT,
        subdir="qvhighlights",
        parser="windows",
        max_new_tokens=64,
        paper_metric_key="map",
        notes="mAP over IoU 0.5:0.95 (Moment-DETR 'MR-full-mAP'); answer windows rank in the order given. An "
        "answer without a window scores 0 in `map` (over all queries); the `mdetr_` columns leave such queries "
        "out, as Moment-DETR does.",
    ),
    TaskSpec(
        name="qvhighlights_hd",
        group="behavior_ablation",
        protocol="generate",
        metric="highlight_detection",
        loader=_highlights,
        layout=_LAYOUT,
        subdir="qvhighlights",
        parser="windows",
        max_new_tokens=64,
        paper_metric_key="map",
        notes="Moment-DETR 'HL-min-VeryGood' mAP (and Hit@1): the answer's windows give the 2-second clips "
        "they cover a score by rank; the paper does not say which saliency level it reports.",
    ),
]

"""Metric functions: `METRICS[name](predictions, targets) -> {key: value}`, one call per task.

Predictions are what the task's protocol yields (a label, a candidate index, a parsed number, a list of
windows, ...); `None` marks an answer the parser could not read. Classification metrics count it as wrong;
regression and correlation metrics leave it out and report how many they left out as `unparsed`.
Percentages (accuracy, mAP, BLEU, ROUGE-L, METEOR; CIDEr x 100) are on 0-100, the scale of the paper's
tables.

Metrics named in `SCORE_METRICS` rank candidates, so they want the per-choice score table of the `logprob`
protocol (`{label: log-probability}`) as the prediction rather than the picked label.
"""

from __future__ import annotations

import math
import re
import string
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bl_data.behavior_metrics import comment_perplexity, likes_r2, replay_scores

MetricFn = Callable[[Sequence[Any], Sequence[Any]], dict[str, Any]]

MOMENT_IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
"""Moment-DETR: moment-retrieval mAP averages AP over temporal IoU 0.5:0.05:0.95."""
CLIP_SECONDS = 2.0
"""QVHighlights annotates saliency per 2-second clip."""
HIGHLIGHT_MIN_SCORE = 4
"""Moment-DETR's headline highlight metrics count a clip as a highlight when an annotator gave it 4
("Very Good", the `HL-min-VeryGood` columns)."""


def _check(predictions: Sequence[Any], targets: Sequence[Any]) -> None:
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    if not targets:
        raise ValueError("no examples to score")


def _norm(value: Any) -> Any:
    return " ".join(value.casefold().split()).strip(" .") if isinstance(value, str) else value


def _pairs(predictions: Sequence[Any], targets: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, int]:
    """Numeric (prediction, target) arrays without the unparsed predictions, and how many were dropped."""
    _check(predictions, targets)
    kept = [(float(p), float(t)) for p, t in zip(predictions, targets, strict=True) if p is not None]
    if not kept:
        return np.zeros(0), np.zeros(0), len(targets)
    pred, gold = (np.asarray(column) for column in zip(*kept, strict=True))
    return pred, gold, len(targets) - len(kept)


# ---- classification ---------------------------------------------------------------------------------------
def accuracy(predictions: Sequence[Any], targets: Sequence[Any]) -> dict[str, float]:
    """Top-1 accuracy (%). Strings compare case- and whitespace-insensitively; a list/tuple/set target
    accepts any of its members (e.g. a sentiment any annotator chose)."""
    _check(predictions, targets)
    right = 0
    for pred, gold in zip(predictions, targets, strict=True):
        accepted = (
            {_norm(g) for g in gold} if isinstance(gold, list | tuple | set | frozenset) else {_norm(gold)}
        )
        right += pred is not None and _norm(pred) in accepted
    return {"accuracy": 100.0 * right / len(targets), "n": len(targets)}


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style answer normalisation: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.casefold().translate(_PUNCT)).split())


def exact_match(predictions: Sequence[str | None], targets: Sequence[str]) -> dict[str, float]:
    """Open-ended QA accuracy (%): the normalised answer equals the normalised gold answer."""
    _check(predictions, targets)
    right = sum(
        p is not None and normalize_answer(p) == normalize_answer(t)
        for p, t in zip(predictions, targets, strict=True)
    )
    return {"accuracy": 100.0 * right / len(targets), "n": len(targets)}


# ---- regression and correlation -------------------------------------------------------------------------
def mse(predictions: Sequence[float | None], targets: Sequence[float]) -> dict[str, float]:
    """Mean squared error over the parsed predictions."""
    pred, gold, unparsed = _pairs(predictions, targets)
    value = float(np.mean((pred - gold) ** 2)) if len(pred) else math.nan
    return {"mse": value, "n": len(pred), "unparsed": unparsed}


def rmse(predictions: Sequence[float | None], targets: Sequence[float]) -> dict[str, float]:
    """Root mean squared error over the parsed predictions."""
    out = mse(predictions, targets)
    return {"rmse": math.sqrt(out.pop("mse")), **out}


def r2(predictions: Sequence[float | None], targets: Sequence[float]) -> dict[str, float]:
    """Coefficient of determination over the parsed predictions (`bl_data.behavior_metrics.likes_r2`)."""
    _check(predictions, targets)
    return likes_r2(predictions, targets)


def spearman(predictions: Sequence[float | None], targets: Sequence[float]) -> dict[str, float]:
    """Spearman's rank correlation ρ (`scipy.stats.spearmanr`) over the parsed predictions; NaN when
    undefined (fewer than two points or a constant side)."""
    from scipy.stats import spearmanr

    pred, gold, unparsed = _pairs(predictions, targets)
    defined = len(pred) >= 2 and np.ptp(pred) > 0 and np.ptp(gold) > 0
    rho = float(spearmanr(pred, gold).statistic) if defined else math.nan
    return {"spearman": rho, "n": len(pred), "unparsed": unparsed}


# ---- ranking (mAP) ----------------------------------------------------------------------------------------
def _score_table(prediction: Mapping[str, float] | str | None) -> dict[str, float]:
    """Per-label scores; a bare label (or None) counts as score 1 for it and 0 for the rest."""
    if prediction is None:
        return {}
    if isinstance(prediction, Mapping):
        return {str(k): float(v) for k, v in prediction.items()}
    return {str(prediction): 1.0}


def _map(predictions: Sequence[Any], targets: Sequence[Sequence[str]]) -> tuple[float, int]:
    """Macro AP (%) over the labels with at least one positive, and how many such labels there are."""
    from sklearn.metrics import average_precision_score

    tables = [_score_table(p) for p in predictions]
    labels = sorted({k for table in tables for k in table} | {str(g) for gold in targets for g in gold})
    index = {label: i for i, label in enumerate(labels)}
    floor = min((v for table in tables for v in table.values()), default=0.0) - 1.0
    scores = np.full((len(tables), len(labels)), floor)
    truth = np.zeros((len(tables), len(labels)), dtype=int)
    for row, (table, gold) in enumerate(zip(tables, targets, strict=True)):
        for label, value in table.items():
            scores[row, index[label]] = value
        for label in gold:
            truth[row, index[str(label)]] = 1
    present = truth.sum(0) > 0
    if not present.any():
        return math.nan, 0
    value = average_precision_score(truth[:, present], scores[:, present], average="macro")
    return 100.0 * float(value), int(present.sum())


def mean_average_precision(predictions: Sequence[Any], targets: Sequence[Sequence[str]]) -> dict[str, float]:
    """Multi-label mAP (%): `sklearn.metrics.average_precision_score` per label, averaged over the labels
    that occur in the targets. A prediction is a `{label: score}` table (labels it lacks rank last)."""
    _check(predictions, targets)
    value, classes = _map(predictions, targets)
    return {"map": value, "n": len(targets), "classes": classes}


def grouped_mean_average_precision(
    predictions: Sequence[Any], targets: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
    """mAP per group over that group's rows only, then their mean (HVU "overall" = the mean over its six
    categories; its loader gives a video a row in a category only when the video has a tag of it, as
    MMAction2 scores HVU). A target is `{"group": name, "labels": [...]}`; each group's mAP is reported as
    `map_<group>`."""
    _check(predictions, targets)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, target in enumerate(targets):
        groups[target["group"]].append(i)
    out: dict[str, float] = {}
    for group, rows in sorted(groups.items()):
        out[f"map_{group}"] = _map([predictions[i] for i in rows], [targets[i]["labels"] for i in rows])[0]
    return {"map": float(np.mean(list(out.values()))), **out, "n": len(targets)}


# ---- generated text ---------------------------------------------------------------------------------------
def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def caption(predictions: Sequence[str | None], targets: Sequence[str | Sequence[str]]) -> dict[str, Any]:
    """BLEU-4, ROUGE-L, METEOR and CIDEr, 0-100, with the coco-caption scorers called as Shot2Story's
    nlg-eval calls them (`bl_eval.coco_caption`): corpus BLEU-4 and METEOR 1.5, mean sentence ROUGE-L
    (β = 1.2), CIDEr-D x 100. A target is one reference or a list of them; an unparsed answer is the empty
    text; runs of whitespace (newlines too) become one space. `scorer` names the scorer and its version.
    Needs a Java runtime (METEOR); without one it raises an error naming METEOR."""
    from .coco_caption import coco_scores, scorer_name

    _check(predictions, targets)
    references = [[_one_line(t)] if isinstance(t, str) else [_one_line(r) for r in t] for t in targets]
    scores = coco_scores([_one_line(p) for p in predictions], references)
    return {key: 100.0 * value for key, value in scores.items()} | {
        "n": len(targets),
        "scorer": scorer_name(),
    }


# ---- behaviour ----------------------------------------------------------------------------------------------
def replay(
    predictions: Sequence[Mapping[str, Any] | None], targets: Sequence[Sequence[float]]
) -> dict[str, float]:
    """Replay values matched by scene number, on 0-100: RMSE, LCBM's ±5 accuracy and the matched / missing /
    extra / repeated scene counts (`bl_data.behavior_metrics.replay_scores`)."""
    _check(predictions, targets)
    return replay_scores(predictions, targets)


def perplexity(predictions: Sequence[Mapping[str, float] | None], targets: Sequence[Any]) -> dict[str, float]:
    """Token-level perplexity from per-example `{"nll", "tokens"}` (`bl_data.behavior_metrics`)."""
    _check(predictions, targets)
    return comment_perplexity(predictions)


# ---- QVHighlights (Moment-DETR's standalone evaluation) -----------------------------------------------------
def _iou(window: Sequence[float], others: np.ndarray) -> np.ndarray:
    """Temporal IoU of one [start, end] window with each row of `others` (M, 2)."""
    inter = np.clip(np.minimum(window[1], others[:, 1]) - np.maximum(window[0], others[:, 0]), 0, None)
    union = (window[1] - window[0]) + (others[:, 1] - others[:, 0]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the precision envelope (VOC 2011 / ActivityNet detection AP)."""
    p = np.concatenate([[0.0], precision, [0.0]])
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1]) + 1
    return float(np.sum((r[steps] - r[steps - 1]) * p[steps]))


def _gold_order(ious: np.ndarray) -> np.ndarray:
    """Gold indices by IoU, highest first; among equal IoUs the later-listed gold window first, the order
    Moment-DETR's `tiou_arr.argsort()[::-1]` gives (numpy sorts short arrays stably, the reversal puts the
    last of a tie first)."""
    return np.lexsort(
        (-np.arange(len(ious)), -ious)
    )  # primary key last: IoU descending, then index descending


def _detection_ap(windows: Sequence[Sequence[float]], gold: np.ndarray, threshold: float) -> float:
    """AP of one query's scored windows against its gold windows: greedy matching in score order (a stable
    sort, so equal scores keep their listed order), each window taking the untaken gold window of highest
    IoU (`_gold_order` breaks ties), each gold window matched at most once."""
    if not len(windows) or not len(gold):
        return 0.0
    order = sorted(windows, key=lambda w: -w[2])
    taken = np.zeros(len(gold), dtype=bool)
    hits = np.zeros(len(order))
    for i, window in enumerate(order):
        ious = _iou(window, gold)
        for j in _gold_order(ious):
            if ious[j] < threshold:
                break
            if not taken[j]:
                taken[j], hits[i] = True, 1.0
                break
    tp = np.cumsum(hits)
    return _interpolated_ap(tp / np.arange(1, len(order) + 1), tp / len(gold))


def _scored_windows(prediction: Sequence[Sequence[float]] | None) -> list[tuple[float, float, float]]:
    """[start, end(, score)] windows; without scores, earlier windows rank higher."""
    windows = list(prediction or [])
    return [
        (float(w[0]), float(w[1]), float(w[2]) if len(w) > 2 else float(len(windows) - i))
        for i, w in enumerate(windows)
    ]


def _gold_windows(target: Mapping[str, Any] | Sequence[Sequence[float]]) -> np.ndarray:
    windows = target["relevant_windows"] if isinstance(target, Mapping) else target
    return np.asarray(windows, dtype=float).reshape(-1, 2)


def _retrieval_summary(aps: np.ndarray, first_iou: np.ndarray) -> dict[str, float]:
    """Moment-retrieval columns (%) from per-query APs (queries, thresholds) and first-window IoUs (queries,)."""
    if not len(aps):
        return dict.fromkeys(("map", "map@0.5", "map@0.75", "r1@0.5", "r1@0.7"), math.nan)
    per_threshold = aps.mean(0)
    return {
        "map": 100.0 * float(per_threshold.mean()),
        "map@0.5": 100.0 * float(per_threshold[0]),
        "map@0.75": 100.0 * float(per_threshold[MOMENT_IOU_THRESHOLDS.index(0.75)]),
        "r1@0.5": 100.0 * float(np.mean(first_iou >= 0.5)),
        "r1@0.7": 100.0 * float(np.mean(first_iou >= 0.7)),
    }


def moment_retrieval(
    predictions: Sequence[Sequence[Sequence[float]] | None],
    targets: Sequence[Mapping[str, Any] | Sequence[Sequence[float]]],
    max_windows: int = 10,
) -> dict[str, float]:
    """QVHighlights moment retrieval, as Moment-DETR's `eval_moment_retrieval` ("full" range), in %.

    `map`: per-query AP at each IoU in 0.5:0.05:0.95 (the first `max_windows` windows listed, ranked by
    score), averaged over queries, then over thresholds; `map@0.5`, `map@0.75` at one threshold;
    `r1@0.5`, `r1@0.7`: the first listed window's IoU with its best-matching gold window reaches the
    threshold. These count a query with no window as AP 0 and IoU 0, over all `n` queries. Moment-DETR
    leaves such queries out (its submissions always have windows): the `mdetr_` columns are the same
    numbers over the `n_answered` queries with at least one window (NaN when there are none).
    """
    _check(predictions, targets)
    aps = np.zeros((len(targets), len(MOMENT_IOU_THRESHOLDS)))
    first_iou = np.zeros(len(targets))
    answered = np.zeros(len(targets), dtype=bool)
    for q, (prediction, target) in enumerate(zip(predictions, targets, strict=True)):
        windows, gold = _scored_windows(prediction)[:max_windows], _gold_windows(target)
        answered[q] = bool(windows)
        for k, threshold in enumerate(MOMENT_IOU_THRESHOLDS):
            aps[q, k] = _detection_ap(windows, gold, threshold)
        if windows and len(gold):
            first_iou[q] = _iou(windows[0], gold).max()
    mdetr = _retrieval_summary(aps[answered], first_iou[answered])
    return {
        **_retrieval_summary(aps, first_iou),
        "n": len(targets),
        **{f"mdetr_{key}": value for key, value in mdetr.items()},
        "n_answered": int(answered.sum()),
    }


def clip_saliency(prediction: Sequence[Sequence[float]] | None, num_clips: int) -> np.ndarray:
    """Per-clip scores (num_clips,) from scored windows: a clip takes the best score of the windows that
    overlap it (a zero-length window marks the clip holding that second); other clips score 0."""
    scores = np.zeros(num_clips)
    for start, end, score in _scored_windows(prediction):
        first = int(start // CLIP_SECONDS)
        last = first if end <= start else math.ceil(end / CLIP_SECONDS) - 1
        span = slice(max(first, 0), min(last + 1, num_clips))
        scores[span] = np.maximum(scores[span], score)
    return scores


def _highlight_ap(truth: np.ndarray, scores: np.ndarray) -> float:
    """Moment-DETR's `get_ap`: AP of binary clip labels ranked by score, on sklearn's precision-recall
    curve with its cumulative-max precision; all-negative -> 0, all-positive -> 1."""
    from sklearn.metrics import precision_recall_curve

    if truth.min() == truth.max():
        return float(truth[0])
    precision, recall, _ = precision_recall_curve(truth, scores)
    precision = np.maximum.accumulate(precision)
    return float(np.mean(precision[np.flatnonzero(np.diff(recall))]))


def highlight_detection(
    predictions: Sequence[Sequence[Sequence[float]] | None], targets: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
    """QVHighlights highlight detection at Moment-DETR's `HL-min-VeryGood` level, in %.

    A target is the annotation line (`duration`, `relevant_clip_ids`, `saliency_scores`: 3 annotators'
    0-4 scores per relevant clip); a clip is a highlight for an annotator whose score is >= 4. `map`: AP
    of the predicted clip scores (`clip_saliency`) per annotator, averaged over annotators and queries;
    `hit1`: the top-scored clip is a highlight for at least one annotator.
    """
    _check(predictions, targets)
    aps, hits = [], []
    for prediction, target in zip(predictions, targets, strict=True):
        num_clips = int(target["duration"] / CLIP_SECONDS)
        gold = np.zeros((num_clips, 3))
        gold[np.asarray(target["relevant_clip_ids"], dtype=int)] = np.asarray(target["saliency_scores"])
        truth = (gold >= HIGHLIGHT_MIN_SCORE).astype(int)  # (clips, annotators)
        scores = clip_saliency(prediction, num_clips)
        aps += [_highlight_ap(truth[:, a], scores) for a in range(truth.shape[1])]
        hits.append(float(truth[int(np.argmax(scores))].max()))
    return {"map": 100.0 * float(np.mean(aps)), "hit1": 100.0 * float(np.mean(hits)), "n": len(targets)}


METRICS: dict[str, MetricFn] = {
    "accuracy": accuracy,
    "exact_match": exact_match,
    "mse": mse,
    "rmse": rmse,
    "r2": r2,
    "spearman": spearman,
    "mean_average_precision": mean_average_precision,
    "grouped_mean_average_precision": grouped_mean_average_precision,
    "caption": caption,
    "replay": replay,
    "perplexity": perplexity,
    "moment_retrieval": moment_retrieval,
    "highlight_detection": highlight_detection,
}

SCORE_METRICS = frozenset({"mean_average_precision", "grouped_mean_average_precision"})
"""Metrics that want the `logprob` protocol's `{label: score}` table as the prediction."""

"""The paper's behaviour metrics, one implementation for the trainer's held-out eval and bl-eval's behaviour tasks.

Conventions (both callers): likes as the percentage 100 * likes / views; replay values scored on LCBM's 0-100
scale (the data's 0-1 values times `REPLAY_SCALE`); a prediction the parser could not read is None; a metric
without data is NaN, and the counts beside it say why.

    likes_r2([2.1, None, 0.4], [2.0, 1.0, 0.5])                 # {"r2", "n", "unparsed"}
    comment_perplexity([{"nll": 12.3, "tokens": 9}, None])      # {"perplexity", "tokens", "n"}
    replay_scores([replay_prediction(parse_behavior(answer)), None], [[0.4, 0.1], [0.9]])
                                        # rmse, ±5 accuracy, matched / missing / extra / repeated scenes
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .parse import ParsedBehavior

REPLAY_SCALE = 100.0
"""Replay values are scored on 0-100 (LCBM), the data and the answers hold 0-1."""
REPLAY_TOLERANCE = 5.0
"""LCBM: a scene's replay value is right when within ±5 of the truth on the 0-100 scale."""


def _check(predictions: Sequence[Any], targets: Sequence[Any]) -> None:
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")


def likes_r2(predictions: Sequence[float | None], targets: Sequence[float]) -> dict[str, float]:
    """Coefficient of determination 1 - SS_res / SS_tot over the parsed predictions; NaN with fewer than two
    of them or a constant truth."""
    _check(predictions, targets)
    kept = [(float(p), float(t)) for p, t in zip(predictions, targets, strict=True) if p is not None]
    pred, gold = np.asarray([p for p, _ in kept]), np.asarray([t for _, t in kept])  # (n,), (n,)
    ss_tot = float(((gold - gold.mean()) ** 2).sum()) if len(kept) >= 2 else 0.0
    value = 1.0 - float(((gold - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else math.nan
    return {"r2": value, "n": len(kept), "unparsed": len(targets) - len(kept)}


def comment_perplexity(predictions: Sequence[Mapping[str, float] | None]) -> dict[str, float]:
    """Token-level perplexity exp(Σ NLL / Σ tokens) from per-sample `{"nll": summed NLL, "tokens": count}`;
    samples without comment tokens (None or 0 tokens) are left out."""
    scored = [p for p in predictions if p is not None and p["tokens"] > 0]
    tokens = sum(int(p["tokens"]) for p in scored)
    nll = sum(float(p["nll"]) for p in scored)
    return {"perplexity": math.exp(nll / tokens) if tokens else math.nan, "tokens": tokens, "n": len(scored)}


def replay_prediction(parsed: ParsedBehavior | None) -> dict[str, Any] | None:
    """A parsed answer's replay as the metric's prediction, JSON-stable (bl-eval caches predictions as JSON):
    `{"values": [[scene, value], …], "repeated": [scene, …]}`; None when it has no replay block."""
    if parsed is None or parsed.replay is None:
        return None
    return {
        "values": [[scene, value] for scene, value in parsed.replay.items()],
        "repeated": list(parsed.repeated_scenes),
    }


def replay_scores(
    predictions: Sequence[Mapping[str, Any] | None], targets: Sequence[Sequence[float]]
) -> dict[str, float]:
    """Replay values matched by scene number (gold scene i is `targets[k][i - 1]`) -> on 0-100:

    rmse over the matched scenes; accuracy (%) = gold scenes within ±5, a missing scene counting as wrong;
    scenes (gold), matched, missing (gold scenes the answer has no value for, all of an unparsed answer's),
    extra (answer scenes beyond the video's), repeated (scene numbers an answer gave again; their later values
    are ignored), unparsed (answers without replay values). Predictions as `replay_prediction` makes them.
    """
    _check(predictions, targets)
    errors: list[float] = []
    missing = extra = repeated = unparsed = 0
    for prediction, gold in zip(predictions, targets, strict=True):
        if prediction is None:
            unparsed += 1
            missing += len(gold)
            continue
        answer = {int(scene): float(value) for scene, value in prediction["values"]}
        repeated += len(prediction["repeated"])
        for scene, truth in enumerate(gold, 1):
            if scene in answer:
                errors.append(REPLAY_SCALE * (answer[scene] - float(truth)))
            else:
                missing += 1
        extra += sum(not 1 <= scene <= len(gold) for scene in answer)
    err = np.abs(np.asarray(errors))  # (matched,)
    scenes = sum(len(gold) for gold in targets)
    right = int(np.sum(err <= REPLAY_TOLERANCE + 1e-9))
    return {
        "rmse": float(np.sqrt(np.mean(err**2))) if len(err) else math.nan,
        "accuracy": 100.0 * right / scenes if scenes else math.nan,
        "scenes": scenes,
        "matched": len(err),
        "missing": missing,
        "extra": extra,
        "repeated": repeated,
        "unparsed": unparsed,
    }

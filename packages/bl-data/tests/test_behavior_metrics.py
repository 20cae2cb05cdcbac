"""The shared behaviour metrics against hand-computed values, and on answers parsed by scene number."""

import math

import pytest

from bl_data.behavior_metrics import comment_perplexity, likes_r2, replay_prediction, replay_scores
from bl_data.parse import parse_behavior


def test_likes_r2_leaves_out_unparsed_and_is_nan_when_undefined():
    # gold mean 7/3: SS_tot = 16/9 + 1/9 + 25/9 = 42/9, SS_res = 1 -> 1 - 9/42
    assert likes_r2([1, 2, 3, None], [1, 2, 4, 9]) == {"r2": pytest.approx(1 - 9 / 42), "n": 3, "unparsed": 1}
    assert math.isnan(likes_r2([1.0, None], [1.0, 2.0])["r2"])  # one point
    assert math.isnan(likes_r2([1.0, 2.0], [3.0, 3.0])["r2"])  # constant truth
    with pytest.raises(ValueError, match="2 predictions for 1 targets"):
        likes_r2([1.0, 2.0], [1.0])


def test_comment_perplexity_pools_tokens():
    out = comment_perplexity(
        [{"nll": 2.0, "tokens": 2}, {"nll": 4.0, "tokens": 2}, None, {"nll": 0.0, "tokens": 0}]
    )
    assert out == {"perplexity": pytest.approx(math.exp(6 / 4)), "tokens": 4, "n": 2}
    assert math.isnan(comment_perplexity([None])["perplexity"])


def test_replay_scores_match_a_skipped_scene_by_number():
    answer = "The replay values for each scene would be:\nScene 1: 1.00\nScene 3: 0.50\nScene 3: 0.00"
    prediction = replay_prediction(parse_behavior(answer))
    assert prediction == {"values": [[1, 1.0], [3, 0.5]], "repeated": [3]}
    out = replay_scores([prediction], [[0.98, 0.10, 0.40]])
    # scene 1: 100 vs 98, scene 3: 50 vs 40 (by position it would have been 50 vs 10); scene 2 missing
    assert out["rmse"] == pytest.approx(math.sqrt((2**2 + 10**2) / 2))
    assert out["accuracy"] == pytest.approx(100 / 3)
    assert (out["matched"], out["missing"], out["extra"], out["repeated"], out["unparsed"]) == (2, 1, 0, 1, 0)
    assert replay_prediction(parse_behavior("The video will be liked by 2.0% of viewers")) is None

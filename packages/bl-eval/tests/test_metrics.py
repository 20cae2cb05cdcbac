"""Each metric against a case computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest

from bl_eval.metrics import (
    METRICS,
    accuracy,
    bleu,
    caption,
    clip_saliency,
    exact_match,
    grouped_mean_average_precision,
    highlight_detection,
    mean_average_precision,
    meteor,
    moment_retrieval,
    mse,
    perplexity,
    r2,
    rmse,
    rouge_l,
    spearman,
)


def test_accuracy_normalises_strings_and_accepts_any_listed_label():
    preds = ["Joy ", "anger", None, "fear", 3]
    golds = ["joy", "fear", "sadness", ["awe", "fear"], 3]
    assert accuracy(preds, golds) == {"accuracy": 60.0, "n": 5}  # joy, fear-in-list, index 3


def test_exact_match_uses_squad_normalisation():
    out = exact_match(["The cat.", "a dog", None], ["cat", "cat", "cat"])
    assert out["accuracy"] == pytest.approx(100 / 3)


def test_mse_rmse_leave_out_unparsed():
    # squared errors (1-0)^2 = 1 and (2-4)^2 = 4 -> 2.5; the None is left out
    assert mse([1, 2, None], [0, 4, 1]) == {"mse": 2.5, "n": 2, "unparsed": 1}
    assert rmse([1, 2, None], [0, 4, 1])["rmse"] == pytest.approx(math.sqrt(2.5))


def test_r2():
    # gold mean 7/3: SS_tot = 16/9 + 1/9 + 25/9 = 42/9, SS_res = 1 -> 1 - 9/42
    assert r2([1, 2, 3], [1, 2, 4])["r2"] == pytest.approx(1 - 9 / 42)
    assert math.isnan(r2([1.0, None], [1.0, 2.0])["r2"])


def test_spearman():
    # gold ranks 1, 3, 2, 4; d^2 sums to 2 -> 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [10, 30, 20, 40])["spearman"] == pytest.approx(0.8)
    assert math.isnan(spearman([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])["spearman"])


MAP_PREDS = [{"a": 0.9, "b": 0.1, "c": 0.3}, {"a": 0.8, "b": 0.7, "c": 0.2}, {"a": 0.2, "b": 0.6, "c": 0.1}]
MAP_GOLD = [["a"], ["b"], ["a", "b"]]


def test_mean_average_precision():
    # a ranked +,-,+ -> AP = 0.5 * 1 + 0.5 * 2/3; b ranked +,+,- -> AP = 1; c never positive -> left out
    out = mean_average_precision(MAP_PREDS, MAP_GOLD)
    assert out["map"] == pytest.approx(100 * (0.5 + 1 / 3 + 1) / 2)
    assert out["classes"] == 2


def test_mean_average_precision_from_bare_labels():
    # a picked label scores 1, the rest 0 (ties form one step, as in sklearn):
    # a: scores [1, 1, 0], truth [1, 0, 1] -> P 1/2 at R 1/2, P 2/3 at R 1 -> AP 7/12; b: all tied -> AP 1/3
    out = mean_average_precision(["a", "a", None], [["a"], ["b"], ["a"]])
    assert out["map"] == pytest.approx(100 * (7 / 12 + 1 / 3) / 2)


def test_grouped_mean_average_precision():
    # group y: c ranked -,+ -> 0.5; d ranked -,+ -> 0.5
    preds = [*MAP_PREDS, {"c": 0.5, "d": 0.4}, {"c": 0.3, "d": 0.9}]
    golds = [{"group": "x", "labels": g} for g in MAP_GOLD] + [
        {"group": "y", "labels": ["d"]},
        {"group": "y", "labels": ["c"]},
    ]
    out = grouped_mean_average_precision(preds, golds)
    x = 100 * (0.5 + 1 / 3 + 1) / 2
    assert out["map_x"] == pytest.approx(x)
    assert out["map_y"] == pytest.approx(50.0)
    assert out["map"] == pytest.approx((x + 50.0) / 2)


def test_bleu():
    # hyp vs ref: 1-grams 5/6 ("the" clipped to 1), 2-grams 3/5, 3-grams 2/4, 4-grams 1/3, equal lengths
    out = bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert out["bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-6)


def test_rouge_l():
    # LCS("the cat sat on the mat", "a cat was sitting on the mat") = cat on the mat = 4: P 4/6, R 4/7
    out = rouge_l(["the cat sat on the mat"], ["a cat was sitting on the mat"])
    assert out["rouge_l"] == pytest.approx(100 * 16 / 26)


def _meteor(matches: int, hyp: int, ref: int, chunks: int) -> float:
    """Lavie & Agarwal 2007 with alpha 0.9, beta 3, gamma 0.5."""
    p, r = matches / hyp, matches / ref
    fmean = p * r / (0.9 * p + 0.1 * r)
    return 100 * fmean * (1 - 0.5 * (chunks / matches) ** 3)


def test_meteor_exact_stem_and_fragmentation():
    # reordered: 6 exact matches in 2 chunks
    assert meteor(["on a mat the cat sat"], ["the cat sat on a mat"])["meteor"] == pytest.approx(
        _meteor(6, 6, 6, 2)
    )
    # "cats" matches "cat" at the Porter-stem stage: 3 matches, 1 chunk
    assert meteor(["the cats sat"], ["the cat sat"])["meteor"] == pytest.approx(_meteor(3, 3, 3, 1))
    # precision 1, recall 2/3, 1 chunk; averaged with an empty answer scoring 0
    out = meteor(["the cat", None], ["the cat sat", "a dog"])
    assert out["meteor"] == pytest.approx(_meteor(2, 2, 3, 1) / 2)


def test_caption_bundles_the_three():
    out = caption(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert set(out) == {"bleu", "rouge_l", "meteor", "n"}


def _replay(*pairs, repeated=()):
    return {"values": [list(p) for p in pairs], "repeated": list(repeated)}


def test_replay_matches_scenes_by_number():
    # example 1: scenes 1 and 3 given (scene 2 skipped), scene 3 repeated, scene 4 beyond the video;
    # on 0-100: (10 vs 12) and (88 vs 90) match, scene 2 is missing; example 2 is unparsed: its scene is missing
    preds = [_replay((1, 0.10), (3, 0.88), (4, 0.5), repeated=[3]), None]
    golds = [[0.12, 0.40, 0.90], [0.3]]
    out = METRICS["replay"](preds, golds)
    assert out["rmse"] == pytest.approx(math.sqrt((4 + 4) / 2))
    assert out["accuracy"] == pytest.approx(100 * 2 / 4)  # scenes 1 and 3 within ±5; 2 missing ones wrong
    assert {k: out[k] for k in ("scenes", "matched", "missing", "extra", "repeated", "unparsed")} == {
        "scenes": 4, "matched": 2, "missing": 2, "extra": 1, "repeated": 1, "unparsed": 1,
    }  # fmt: skip
    # by position, scene 3's value would have been compared with scene 2's truth (88 vs 40)
    assert METRICS["replay"]([_replay((1, 0.45))], [[0.40]])["accuracy"] == 100.0  # exactly 5 apart counts
    assert math.isnan(METRICS["replay"]([None], [[0.3]])["rmse"])


def test_perplexity():
    out = perplexity([{"nll": 2.0, "tokens": 2}, {"nll": 4.0, "tokens": 2}, None], ["a", "b", "c"])
    assert out["perplexity"] == pytest.approx(math.exp(6 / 4))
    assert (out["tokens"], out["n"]) == (4, 2)


def test_moment_retrieval():
    preds = [
        [[0, 10, 0.9], [20, 30, 0.5]],  # TP then FP: AP 1 at every IoU; top IoU 1
        [[0, 8, 0.9], [22, 30, 0.8]],  # both IoU 0.8: AP 1 for the 7 thresholds <= 0.8, 0 for 0.85-0.95
        [[5, 15, 0.9], [0, 10, 0.5]],  # FP (IoU 1/3) then TP: AP 0.5 everywhere; top IoU 1/3
    ]
    golds = [{"relevant_windows": [[0, 10]]}, {"relevant_windows": [[0, 10], [20, 30]]}, [[0, 10]]]
    out = moment_retrieval(preds, golds)
    assert out["map"] == pytest.approx(100 * (1 + 0.7 + 0.5) / 3)
    assert out["map@0.5"] == pytest.approx(100 * 2.5 / 3)
    assert out["map@0.75"] == pytest.approx(100 * 2.5 / 3)
    assert out["r1@0.5"] == pytest.approx(200 / 3)
    assert out["r1@0.7"] == pytest.approx(200 / 3)
    assert moment_retrieval([None], [[[0, 10]]])["map"] == 0.0


def test_clip_saliency():
    # 2-second clips: [4, 6] covers clip 2, [2, 4] clip 1, a point at 9 s clip 4
    assert clip_saliency([[4, 6, 2.0], [2, 4, 1.0], [9, 9, 0.5]], 5).tolist() == [0, 1, 2, 0, 0.5]


def test_highlight_detection():
    target = {
        "duration": 10,
        "relevant_clip_ids": [1, 2, 3],
        "saliency_scores": [[4, 2, 4], [4, 4, 1], [1, 1, 1]],
    }
    # clip scores [0, 1, 2, 0, 0]; highlights (>= 4) per annotator: {1, 2}, {2}, {1}
    # APs: 1 (ranked +,+), 1 (top is +), 0.5 (ranked -,+); the top clip 2 is a highlight for annotators 0, 1
    out = highlight_detection([[[4, 6, 2.0], [2, 4, 1.0]]], [target])
    assert out["map"] == pytest.approx(100 * 2.5 / 3)
    assert out["hit1"] == 100.0
    none_good = {"duration": 4, "relevant_clip_ids": [0], "saliency_scores": [[3, 3, 3]]}
    assert highlight_detection([[[0, 2, 1.0]]], [none_good]) == {"map": 0.0, "hit1": 0.0, "n": 1}


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_rejects_mismatched_lengths(name):
    with pytest.raises(ValueError):
        METRICS[name]([None], [])

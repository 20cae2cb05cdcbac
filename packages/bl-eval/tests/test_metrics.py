"""Each metric against a case computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest

from bl_eval import coco_caption
from bl_eval.metrics import (
    METRICS,
    accuracy,
    caption,
    clip_saliency,
    exact_match,
    grouped_mean_average_precision,
    highlight_detection,
    mean_average_precision,
    moment_retrieval,
    mse,
    perplexity,
    r2,
    rmse,
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


CAPTION_PAIRS = [  # (answer, reference(s)); the answers as the model might give them
    (
        "A man in a red shirt is cooking pasta in a small kitchen.",
        "A man wearing a red shirt cooks pasta in a kitchen.",
    ),
    ("Two dogs run across a snowy field\nand chase a ball.", "Two dogs are playing with a ball in the snow."),
    (
        "The speaker explains how to change a bicycle tire. ",
        "A woman shows how to fix a flat tire on a bike.",
    ),
    ("a crowd cheers as the band plays on stage", "A crowd cheers while the band plays on the stage."),
    (None, "A child draws a house with crayons."),
    ("A cat sleeps on a sofa.", ["A cat is sleeping on the couch.", "A cat sleeps on a sofa in the sun."]),
]
COCO_CAPTION = {  # pycocoevalcap 1.2 called directly, as nlg-eval calls it, on the same texts made one line
    # each ("field and chase", "tire.", "" for None): Bleu(4)[3], Meteor(), Rouge(), Cider(), all x 100
    "bleu": 19.662509827730593,
    "meteor": 29.270467069178513,
    "rouge_l": 43.28785285783787,
    "cider": 196.06288211881822,
}


def test_caption_reports_a_failing_meteor_jar(monkeypatch, tmp_path):
    java = tmp_path / "java"
    java.write_text("#!/bin/sh\necho 'Error: could not load the jar' >&2\nexit 1\n")
    java.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    coco_caption._meteor_scorer.cache_clear()  # start the scorer with this "java"
    with pytest.raises(RuntimeError, match=r"METEOR.*could not load the jar"):
        caption(["a cat"], ["a cat sat"])


def test_caption_matches_the_coco_caption_scorers():
    out = caption([p for p, _ in CAPTION_PAIRS], [t for _, t in CAPTION_PAIRS])
    for key, value in COCO_CAPTION.items():
        assert out[key] == pytest.approx(value, abs=1e-9), key
    assert out["n"] == len(CAPTION_PAIRS)
    assert out["scorer"].startswith("pycocoevalcap 1.2 (")


def test_caption_without_java_names_meteor(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    with pytest.raises(RuntimeError, match=r"METEOR.*java"):
        caption(["a cat"], ["a cat sat"])


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
        "scenes": 4,
        "matched": 2,
        "missing": 2,
        "extra": 1,
        "repeated": 1,
        "unparsed": 1,
    }
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


def test_moment_retrieval_ties_first_window_and_unanswered_queries():
    preds = [
        # [0, 20] has IoU exactly 0.5 with both touching gold windows: it takes the later one, [10, 20], so
        # [10, 20] (IoU 1 with it, 0 with [0, 10]) is a FP at IoU 0.5 -> TP, FP: AP 1 * 1/2 = 0.5. Above 0.5
        # [0, 20] is a FP and [10, 20] a TP -> AP 1/2 * 1/2 = 0.25. mAP (0.5 + 9 * 0.25) / 10 = 0.275.
        [[0, 20, 0.9], [10, 20, 0.8]],
        # listed low score first: ranked by score the TP leads (AP 1), but R1 reads the first listed (IoU 0)
        [[0, 10, 0.2], [20, 30, 0.9]],
        None,  # no window: AP 0 and IoU 0 in our columns, left out of the mdetr_ ones
    ]
    golds = [{"relevant_windows": [[0, 10], [10, 20]]}, [[20, 30]], [[0, 5]]]
    out = moment_retrieval(preds, golds)
    assert out["map"] == pytest.approx(100 * (0.275 + 1) / 3)
    assert out["map@0.5"] == pytest.approx(100 * (0.5 + 1) / 3)
    assert out["map@0.75"] == pytest.approx(100 * (0.25 + 1) / 3)
    assert out["r1@0.5"] == pytest.approx(100 / 3)  # only the first query's [0, 20] (IoU 0.5)
    assert out["r1@0.7"] == 0.0
    assert (out["n"], out["n_answered"]) == (3, 2)
    # the same numbers Moment-DETR's standalone_eval gives for the two answered queries
    assert out["mdetr_map"] == pytest.approx(63.75)
    assert out["mdetr_map@0.5"] == pytest.approx(75.0)
    assert out["mdetr_map@0.75"] == pytest.approx(62.5)
    assert (out["mdetr_r1@0.5"], out["mdetr_r1@0.7"]) == (50.0, 0.0)
    assert math.isnan(moment_retrieval([None], [[[0, 10]]])["mdetr_map"])


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

"""The shipped reference numbers against PAPER.md §4.2."""

from __future__ import annotations

from pathlib import Path

import pytest

from bl_eval.reference import paper_results, reference_note, reference_rows, reference_settings
from bl_eval.tasks import TASKS

PAPER = Path(__file__).resolve().parents[3].parent / "shared" / "PAPER.md"


@pytest.mark.parametrize(
    ("task", "metric", "setting", "model", "value"),
    [
        ("caer", None, None, "Behavior-LLaVA", 51.0),
        ("caer", None, "fine-tuned", "LLaMA-VID", 75.6),
        ("ekman6", None, None, "Ad-LLaVA", 37.66),
        ("emoset", None, None, "LLaMA-VID", 45.23),
        ("abstract", None, "fine-tuned", "Behavior-LLaVA", 81.41),
        ("ads_reason", None, "0-shot, video + GPT-3.5 story", "Behavior-LLaVA", 79.18),
        ("ads_topic", None, None, "LLaMA-VID", 10.11),
        ("ads_sentiment_all", None, "random", "Random", 14.3),
        ("lvu_view_count", "mse", None, "Behavior-LLaVA", 5.12),
        ("lvu_year", None, None, "Ad-LLaVA", 77.34),
        ("hvu_overall", None, None, "Behavior-LLaVA", 54.14),
        ("hvu_object", None, "0-shot, with story", "LLaMA-VID", 99.92),
        ("msrvtt_qa", "accuracy", None, "Behavior-LLaVA", 59.2),
        ("msrvtt_qa", "score", None, "Behavior-LLaVA", 3.4),
        ("memento10k", None, None, "Behavior-LLaVA", 0.12),
        ("lambda", None, "fine-tuned, all data", "Behavior-LLaVA", 0.52),
        ("shot2story_audio", "meteor", None, "LLaMA-VID", 30.7),
        ("imdb_1shot", None, None, "Behavior-LLaVA", 90.2),
        ("qvhighlights_hd", None, None, "Behavior-LLaVA[Replay-Graphs]", 34.9),
        ("shot2story_summary", "rouge_l", None, "Behavior-LLaVA[Mem-Recalls]", 20.3),
        ("blift_likes_r2", None, None, "LLaMA-VID", -0.1),
        ("blift_comment_ppl", None, None, "Behavior-LLaVA", 3.05),
    ],
)
def test_spot_checks(task, metric, setting, model, value):
    assert reference_rows(task, metric, setting)[model] == value


def test_default_rows_name_the_three_models():
    assert reference_rows("caer") == {"LLaMA-VID": 27.2, "Ad-LLaVA": 27.3, "Behavior-LLaVA": 51.0}
    assert reference_rows("blift_replay_rmse") == {}
    with pytest.raises(KeyError):
        reference_rows("caer", setting="no such row")
    assert "0.55" in reference_note("lambda")


def test_every_reference_task_is_registered():
    assert set(paper_results()["tasks"]) <= set(TASKS)
    assert set(paper_results()["notes"]) <= set(TASKS)
    assert reference_settings("hvu_scene") == {"map": ["0-shot", "0-shot, with story"]}


def _spellings(value: float) -> set[str]:
    """How PAPER.md may print `value` (0.40 as ".40", 67.1 as "67.10", ...)."""
    forms = {str(value), f"{value:.2f}", f"{value:.1f}", f"{value:g}"}
    return forms | {f.replace("0.", ".", 1) for f in forms if f.startswith("0.")}


@pytest.mark.skipif(not PAPER.exists(), reason="shared/PAPER.md is not beside the checkout")
def test_every_number_is_in_paper_md():
    text = PAPER.read_text(encoding="utf-8").replace("\u2212", "-")
    section = text[text.index("## 4.2 Results") :]
    missing = [
        (task, metric, setting, model, value)
        for task, metrics in paper_results()["tasks"].items()
        for metric, settings in metrics.items()
        for setting, rows in settings.items()
        for model, value in rows.items()
        if not any(form in section for form in _spellings(value))
    ]
    assert not missing

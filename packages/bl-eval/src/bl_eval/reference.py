"""The paper's published numbers (PAPER.md §4.2), shipped as `data/paper_results.json`.

    reference_rows("caer")                      # {"LLaMA-VID": 27.2, "Ad-LLaVA": 27.3, "Behavior-LLaVA": 51.0}
    reference_rows("caer", setting="fine-tuned")
    reference_rows("shot2story_audio", "meteor")

Per task, the first metric is the task's headline metric (its spec's `paper_metric_key`) and the first
setting the row closest to bl-eval's own protocol.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any


@functools.cache
def paper_results() -> dict[str, Any]:
    """The whole file: `{"source", "layout", "notes", "tasks": {task: {metric: {setting: {model: value}}}}}`."""
    return json.loads(
        resources.files("bl_eval").joinpath("data/paper_results.json").read_text(encoding="utf-8")
    )


def reference_rows(task: str, metric: str | None = None, setting: str | None = None) -> dict[str, float]:
    """The paper's values of `task` by model name, for `metric` and `setting` (default: the first listed);
    empty for a task the paper gives no numbers for. An unknown metric or setting raises KeyError."""
    metrics = paper_results()["tasks"].get(task)
    if metrics is None:
        return {}
    settings = metrics[metric or next(iter(metrics))]
    return dict(settings[setting or next(iter(settings))])


def reference_settings(task: str) -> dict[str, list[str]]:
    """metric -> the settings (rows) the paper reports for `task`."""
    return {metric: list(settings) for metric, settings in paper_results()["tasks"].get(task, {}).items()}


def reference_note(task: str) -> str:
    """Caveats on comparing with the paper's numbers for `task` ("" when none)."""
    return paper_results()["notes"].get(task, "")

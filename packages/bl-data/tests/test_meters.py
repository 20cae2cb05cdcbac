"""StageMeter on a fake clock: model loads, busy time and the busy fraction that report.json records."""

from __future__ import annotations

import pytest

from bl_data import meters
from bl_data.meters import StageMeter, summarize


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_busy_fraction_counts_batches_over_the_life_after_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(meters.time, "monotonic", clock)
    meter = StageMeter("caption", worker="w1")
    assert meter.snapshot()["busy_fraction"] is None  # no batch yet
    with meter.loading():
        clock.now += 5.0  # the model load is not part of the fraction
    clock.now += 1.0  # idle: waiting for the first posts
    with meter.busy(posts=4):
        clock.now += 2.0
    clock.now += 1.0
    with meter.busy(posts=3):
        clock.now += 1.0
    snap = meter.snapshot()
    assert snap == {
        "stage": "caption",
        "worker": "w1",
        "loads": 1,
        "load_s": 5.0,
        "batches": 2,
        "posts": 7,
        "busy_s": 3.0,
        "busy_fraction": 0.6,
    }
    with pytest.raises(RuntimeError), meter.busy(posts=1):  # a failed batch still counts its time
        clock.now += 1.0
        raise RuntimeError("boom")
    assert (
        meter.snapshot()["busy_s"] == 4.0 and meter.snapshot()["busy_fraction"] == 0.667
    )  # 4 s of 6, rounded


def test_summarize_groups_workers_by_stage() -> None:
    snaps = [
        StageMeter("asr", worker="b", loads=2, posts=3).snapshot(),
        StageMeter("caption", worker="a", loads=1, posts=5).snapshot(),
        StageMeter("asr", worker="a", loads=1, posts=4).snapshot(),
    ]
    summary = summarize(snaps)
    assert (
        summary["asr"]["workers"] == 2 and summary["asr"]["model_loads"] == 3 and summary["asr"]["posts"] == 7
    )
    assert [w["worker"] for w in summary["asr"]["each"]] == ["a", "b"]
    assert summary["caption"]["model_loads"] == 1 and "stage" not in summary["caption"]["each"][0]

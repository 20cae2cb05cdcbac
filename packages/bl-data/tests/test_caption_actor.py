"""The Ray engine's caption actor runs several calls at once (`RayConfig.caption_calls`) without Ray: the
model sees one call at a time and every post gets the captions of its own keyframes."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np

from bl_data.engines.ray import _batch_rows, _CaptionActor, _Row, _rows_batch


class CountingCaptioner:
    """Captions each keyframe with its fill value; records how many calls were inside it at once."""

    name = "counting"

    def __init__(self) -> None:
        self.inside = 0
        self.most_inside = 0
        self.calls = 0
        self.count_lock = threading.Lock()

    def __call__(self, keyframes):
        with self.count_lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.calls += 1
        time.sleep(0.05)  # long enough for the other thread's call to arrive while this one is inside
        with self.count_lock:
            self.inside -= 1
        return [(f"value {int(kf[0, 0, 0])}", ["t"]) for kf in keyframes]


def _batch(first: int, posts: int) -> dict[str, np.ndarray]:
    """`posts` rows whose post i has i % 3 + 1 keyframes, each filled with a value unique in the test."""
    rows = []
    for i in range(first, first + posts):
        keyframes = [np.full((4, 6, 3), 10 * i + k, np.uint8) for k in range(i % 3 + 1)]
        work = SimpleNamespace(analysis=SimpleNamespace(keyframes=keyframes))
        rows.append(_Row(slot=i, post_id=f"p{i}", media=f"p{i}.mp4", work=work))
    return _rows_batch(rows)


def test_concurrent_calls_enter_the_model_one_at_a_time() -> None:
    captioner = CountingCaptioner()
    actor = _CaptionActor(lambda: captioner)
    batches = [_batch(4 * b, 4) for b in range(6)]
    results: dict[int, list[_Row]] = {}

    def call(b: int) -> None:
        results[b] = _batch_rows(actor(batches[b]))

    threads = [threading.Thread(target=call, args=(b,)) for b in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert captioner.calls == len(batches)
    assert captioner.most_inside == 1
    rows = [row for b in range(len(batches)) for row in results[b]]
    for row in rows:
        i = row.slot
        assert row.captions == [(f"value {10 * i + k}", ["t"]) for k in range(i % 3 + 1)], row.post_id
        assert row.captioner == "counting"
    meter = actor.meter.snapshot()
    assert (meter["batches"], meter["posts"], meter["loads"]) == (len(batches), len(rows), 1)
    # each call's snapshot counts the calls done so far: one per call, whichever thread ran first
    assert sorted(results[b][0].meters[-1]["batches"] for b in results) == list(range(1, len(batches) + 1))

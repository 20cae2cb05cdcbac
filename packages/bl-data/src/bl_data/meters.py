"""How busy a model-holding worker (a caption or ASR actor) is: its model loads and its busy fraction.

    meter = StageMeter("caption")
    with meter.loading():
        model = build()
    with meter.busy(posts=8):
        model(batch)
    meter.snapshot()   # {"stage": "caption", "loads": 1, "busy_fraction": 0.93, ...}

The busy fraction is the time spent in batches over the time from the end of the first load to the end of
the latest batch: the share of its life with posts to work on that the worker actually worked.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StageMeter:
    """Model loads and busy time of one worker of `stage`; `worker` names it (host, pid, a unique tag)."""

    stage: str
    worker: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    )
    loads: int = 0
    load_s: float = 0.0
    batches: int = 0
    posts: int = 0
    busy_s: float = 0.0
    ready_at: float | None = None
    last_end: float | None = None

    @contextlib.contextmanager
    def loading(self) -> Iterator[None]:
        """Time one model load."""
        start = time.monotonic()
        yield
        self.loads += 1
        self.load_s += time.monotonic() - start
        if self.ready_at is None:
            self.ready_at = time.monotonic()

    @contextlib.contextmanager
    def busy(self, posts: int) -> Iterator[None]:
        """Time one batch of `posts` posts."""
        start = time.monotonic()
        if self.ready_at is None:
            self.ready_at = start
        try:
            yield
        finally:
            self.last_end = time.monotonic()
            self.busy_s += self.last_end - start
            self.batches += 1
            self.posts += posts

    def add_load(self, seconds: float) -> None:
        """Count a load timed elsewhere (e.g. an ASR server's restart)."""
        self.loads += 1
        self.load_s += seconds

    def snapshot(self) -> dict[str, Any]:
        """The meter as JSON-ready numbers, with `busy_fraction` (None before the first batch)."""
        span = (self.last_end - self.ready_at) if self.last_end is not None and self.ready_at else None
        record = asdict(self)
        del record["ready_at"], record["last_end"]
        record["load_s"], record["busy_s"] = round(self.load_s, 3), round(self.busy_s, 3)
        record["busy_fraction"] = round(min(1.0, self.busy_s / span), 3) if span else None
        return record


def summarize(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """`report.json`'s "actors": per stage, the workers' model loads and busy fractions."""
    stages: dict[str, Any] = {}
    for snap in sorted(snapshots, key=lambda s: (s["stage"], s["worker"])):
        stage = stages.setdefault(snap["stage"], {"workers": 0, "model_loads": 0, "posts": 0, "each": []})
        stage["workers"] += 1
        stage["model_loads"] += snap["loads"]
        stage["posts"] += snap["posts"]
        stage["each"].append({k: v for k, v in snap.items() if k != "stage"})
    return stages

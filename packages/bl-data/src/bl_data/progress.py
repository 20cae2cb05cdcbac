"""Progress that fits the output: a tqdm bar in a terminal, periodic log lines otherwise (CI, Slurm, nohup).

with progress(total=300, desc="train") as bar:
    bar.update(1); bar.set_postfix(loss=1.23)
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


class LogProgress:
    """tqdm's `update` / `set_postfix` / `close` surface, logged every `every` items or `interval_s` seconds."""

    def __init__(
        self,
        total: int | None = None,
        desc: str = "",
        initial: int = 0,
        unit: str = "it",
        every: int | None = None,
        interval_s: float = 30.0,
        disable: bool = False,
    ) -> None:
        self.total, self.desc, self.n, self.unit, self.disable = total, desc, initial, unit, disable
        if every is None and total:
            every = max(1, total // 10)  # about ten lines over the whole run, plus one per interval_s
        self.every = every
        self.interval_s, self.postfix = interval_s, ""
        self._last_t = time.monotonic()
        self._last_n = initial

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
        )

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        due = (self.every and self.n - self._last_n >= self.every) or now - self._last_t >= self.interval_s
        if due or (self.total is not None and self.n >= self.total):
            self._log(now)

    def _log(self, now: float) -> None:
        if self.disable or self.n == self._last_n:
            return
        rate = (self.n - self._last_n) / max(now - self._last_t, 1e-9)
        done = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        logger.info(
            "%s %s %s (%.2f %s/s)%s",
            self.desc,
            done,
            self.unit,
            rate,
            self.unit,
            f" {self.postfix}" if self.postfix else "",
        )
        self._last_n, self._last_t = self.n, now

    def close(self) -> None:
        self._log(time.monotonic())

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    total: int | None = None,
    desc: str = "",
    initial: int = 0,
    unit: str = "it",
    disable: bool = False,
    every: int | None = None,
    interval_s: float = 30.0,
) -> tqdm | LogProgress:
    """A tqdm bar when stderr is a terminal, else a `LogProgress` (same update / set_postfix / close).

    every / interval_s: the log lines' period in items (default: a tenth of total) and in seconds.
    """
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, initial=initial, unit=unit, disable=disable, dynamic_ncols=True)
    return LogProgress(total, desc, initial, unit, every, interval_s, disable)

"""Metric loggers: one interface (`log(step, record)`, `close()`), three sinks and a fan-out.

A record is what the trainer measured at one step: a training record (`loss`, `lr`, `tokens_per_s`,
`elapsed_s`, `skipped`, `skipped_steps`) or an evaluation record (`{"eval": {metric: value}}`).
`metrics.jsonl` keeps each record whole, as `{"step": N, **record}`; the dashboards (TensorBoard, W&B) get the
scalars of `scalars(record)`: `train/<name>` for `TRAIN_SCALARS`, `eval/<name>` for every eval value.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from .checkpoint import open_metrics

TRAIN_SCALARS = ("loss", "lr", "tokens_per_s")  # what the dashboards plot of a training record


class MetricLogger(Protocol):
    """Where a step's metrics go."""

    def log(self, step: int, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The dashboard scalars of a record, by tag (None values, e.g. a skipped step's loss, are left out)."""
    if "eval" in record:
        tagged = {f"eval/{name}": value for name, value in record["eval"].items()}
    else:
        tagged = {f"train/{name}": record[name] for name in TRAIN_SCALARS if name in record}
    return {tag: value for tag, value in tagged.items() if value is not None}


class JsonlLogger:
    """`metrics.jsonl`: one JSON line per record, flushed at once. Resuming from step `start` first cuts the
    records of later steps (written by the run that stopped) so each step appears once."""

    def __init__(self, path: Path | str, start: int = 0) -> None:
        self._file = open_metrics(Path(path), start)

    def log(self, step: int, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps({"step": step, **record}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardLogger:
    """TensorBoard event files in `log_dir`. Resuming from step `start`, TensorBoard drops the events a killed
    run wrote after that step (`purge_step`)."""

    def __init__(self, log_dir: Path | str, start: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(log_dir), purge_step=start + 1)

    def log(self, step: int, record: Mapping[str, Any]) -> None:
        for tag, value in scalars(record).items():
            self._writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self._writer.close()


class WandbLogger:
    """A Weights & Biases run (the `wandb` extra). `init` options (e.g. `mode="offline"`, `dir`) pass through."""

    def __init__(self, project: str, name: str, config: dict[str, Any], **init: Any) -> None:
        try:
            import wandb
        except ImportError as err:
            raise ImportError(
                "train.wandb_project is set but wandb is missing: pip install 'bl-train[wandb]'"
            ) from err
        self._run = wandb.init(project=project, name=name, config=config, resume="allow", **init)

    def log(self, step: int, record: Mapping[str, Any]) -> None:
        self._run.log(scalars(record), step=step)

    def close(self) -> None:
        self._run.finish()


class MetricLoggers:
    """The fan-out: each record to every sink, in order. No sinks (ranks other than 0): records go nowhere."""

    def __init__(self, sinks: Iterable[MetricLogger] = ()) -> None:
        self.sinks = list(sinks)

    def log(self, step: int, record: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.log(step, record)

    def close(self) -> None:
        """Close every sink, in order, even when one fails (its error is raised once all are closed); idempotent."""
        sinks, self.sinks = self.sinks, []
        with contextlib.ExitStack() as stack:
            for sink in reversed(sinks):  # ExitStack runs its callbacks last-in first-out
                stack.callback(sink.close)

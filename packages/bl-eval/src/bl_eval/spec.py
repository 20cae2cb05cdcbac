"""The declarative task spec every benchmark is written as, and the example it yields."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Protocol = Literal["logprob", "generate", "retrieval", "kshot", "nll"]
"""`nll`: teacher-forced scoring of the gold answer (`Example.target`, a text) over the character spans
`meta["score_spans"]` of it; the prediction is `{"nll": summed NLL, "tokens": scored token count}`."""


@dataclass
class Example:
    """One evaluation item, model-agnostic.

    media: paths of the image(s)/video(s) the prompt shows (in placeholder order), empty for text-only.
    prompt: the human turn, with `<image>` / `<video>` placeholders.
    target: the gold answer (a label word, a number, a text, or the index of the right candidate).
    choices: candidate answers for `logprob` (label words) and `retrieval` (e.g. 30 statements).
    shots: for `kshot`: earlier (prompt, answer, media) turns given in context.
    """

    id: str
    prompt: str
    target: Any
    media: list[Path] = field(default_factory=list)
    choices: list[str] | None = None
    shots: list[tuple[str, str, list[Path]]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """A benchmark task: where its data is, how to ask, how to score.

    name: registry key, e.g. "caer". group: the paper's table, e.g. "video_emotion".
    loader(data_root) -> examples, reading the benchmark's own published layout under `data_root / subdir`.
    layout: human-readable description of the expected files (shown by `apps/eval --list`).
    metric: name in `bl_eval.metrics.METRICS`; parser: name in `bl_eval.parsers.PARSERS` (generate protocol).
    paper_metric_key: the column of the paper's table the metric is reported under.
    """

    name: str
    group: str
    protocol: Protocol
    metric: str
    loader: Callable[[Path], Iterator[Example]]
    layout: str
    subdir: str
    parser: str | None = None
    max_new_tokens: int = 32
    shots: int = 0
    higher_is_better: bool = True
    paper_metric_key: str | None = None
    notes: str = ""

    def load(self, data_root: Path, limit: int | None = None) -> list[Example]:
        root = Path(data_root) / self.subdir
        if not root.exists():
            raise FileNotFoundError(
                f"task {self.name}: data not found at {root}. Expected layout:\n{self.layout}"
            )
        examples = []
        for example in self.loader(root):
            examples.append(example)
            if limit is not None and len(examples) >= limit:
                break
        return examples


def spec_hash(spec: TaskSpec) -> str:
    """A stable hash of what defines a task's numbers (protocol, metric, parser, shots, layout)."""
    import hashlib

    fields = (
        spec.name,
        spec.protocol,
        spec.metric,
        spec.parser,
        spec.shots,
        spec.max_new_tokens,
        spec.layout,
    )
    return hashlib.sha256(repr(fields).encode()).hexdigest()[:16]

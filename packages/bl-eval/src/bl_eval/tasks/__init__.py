"""The task registry: `TASKS[name] -> TaskSpec`, one module per group of the paper's tables.

Each module reads its benchmark's own published file layout (described by the spec's `layout`) from
`<data root>/<spec.subdir>`.
"""

from __future__ import annotations

from ..spec import TaskSpec
from . import ads, audio, behavior, emotion, hvu, lvu, memorability, qvhighlights, text, videoqa

_MODULES = (lvu, hvu, videoqa, ads, emotion, memorability, audio, text, qvhighlights, behavior)


def _registry() -> dict[str, TaskSpec]:
    tasks: dict[str, TaskSpec] = {}
    for module in _MODULES:
        for spec in module.SPECS:
            if spec.name in tasks:
                raise ValueError(f"task {spec.name!r} is defined twice")
            tasks[spec.name] = spec
    return tasks


TASKS: dict[str, TaskSpec] = _registry()

__all__ = ["TASKS"]

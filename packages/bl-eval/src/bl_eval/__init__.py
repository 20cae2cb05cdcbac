"""bl-eval: the paper's benchmarks as a task registry, their protocols and metrics, and a resumable runner.

The names below are imported on first use (the runner imports torch, transformers and peft), so the apps'
`--help` (`bl_eval.apps`) stays quick.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "METRICS": "metrics",
    "evaluate": "runner",
    "run_task": "runner",
    "Example": "spec",
    "TaskSpec": "spec",
    "TASKS": "tasks",
}

__all__ = ["METRICS", "TASKS", "Example", "TaskSpec", "evaluate", "run_task"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""bl-eval: the paper's benchmarks as a task registry, their protocols and metrics, and a resumable runner."""

from .metrics import METRICS
from .runner import evaluate, run_task
from .spec import Example, TaskSpec
from .tasks import TASKS

__version__ = "0.1.0"

__all__ = ["METRICS", "TASKS", "Example", "TaskSpec", "evaluate", "run_task"]

"""bl-train: DeepSpeed training of Behavior-LLaVA from typed recipes.

`Trainer`, `TrainSummary`, `TrainingDiverged` and `build_demo_data` are imported on first use (they import
DeepSpeed), so `from bl_train import load_recipe` stays quick.
"""

from importlib import import_module

from .config import Recipe, load_recipe, recipe_parser
from .deepspeed_config import deepspeed_config

__version__ = "0.1.0"

_LAZY = {
    "Trainer": "engine",
    "TrainSummary": "engine",
    "TrainingDiverged": "engine",
    "build_demo_data": "demo",
}

__all__ = [
    "Recipe",
    "TrainSummary",
    "Trainer",
    "TrainingDiverged",
    "build_demo_data",
    "deepspeed_config",
    "load_recipe",
    "recipe_parser",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

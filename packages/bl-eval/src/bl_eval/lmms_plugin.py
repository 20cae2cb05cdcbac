"""The `lmms_eval.models` entry point of bl-eval's wheel: registers `behavior_llava` with lmms-eval.

Kept apart from `bl_eval.lmms` (which imports lmms-eval, torch and the model) because lmms-eval loads entry points
while its own model registry is being built; the class is imported only when a run asks for it.
"""

from __future__ import annotations

MODEL_NAME = "behavior_llava"
CLASS_PATH = "bl_eval.lmms.BehaviorLlavaLMM"


def manifest():
    """-> lmms-eval's `ModelManifest` for `behavior_llava` (a "simple" model)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=CLASS_PATH)

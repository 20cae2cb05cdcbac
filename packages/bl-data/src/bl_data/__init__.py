"""bl-data: media + engagement logs -> verbalised BLIFT instruction samples -> webdataset shards.

The pipeline's and the shards' names are imported on first use (they import PyAV, OpenCV, scenedetect,
scikit-learn), so `bl_data.cli` and the apps' `--help` stay quick.
"""

from importlib import import_module

from .parse import BehaviorParseError, ParsedBehavior, parse_behavior
from .records import Comment, Failure, HeatmapMarker, Post, Scene
from .verbalize import VerbalizedSample, verbalize

__version__ = "0.1.0"

_LAZY = dict.fromkeys(("FailureLog", "MediaLedger", "PrepareConfig", "media_inputs", "prepare"), "pipeline")
_LAZY |= dict.fromkeys(("ShardError", "ShardIndex", "ShardWriter", "decode_sample", "open_shards"), "shards")

__all__ = [
    "BehaviorParseError",
    "Comment",
    "Failure",
    "FailureLog",
    "HeatmapMarker",
    "MediaLedger",
    "ParsedBehavior",
    "Post",
    "PrepareConfig",
    "Scene",
    "ShardError",
    "ShardIndex",
    "ShardWriter",
    "VerbalizedSample",
    "decode_sample",
    "media_inputs",
    "open_shards",
    "parse_behavior",
    "prepare",
    "verbalize",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

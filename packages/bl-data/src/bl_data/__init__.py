"""bl-data: media + engagement logs -> verbalised BLIFT instruction samples -> webdataset shards."""

from .parse import BehaviorParseError, ParsedBehavior, parse_behavior
from .pipeline import FailureLog, MediaLedger, PrepareConfig, media_inputs, prepare
from .records import Comment, Failure, HeatmapMarker, Post, Scene
from .shards import ShardError, ShardIndex, ShardWriter, decode_sample, open_shards
from .verbalize import VerbalizedSample, verbalize

__version__ = "0.1.0"

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

"""Importers: each yields a `Post` per usable input and a `Failure` per bad one, and never raises on bad data.

Arguments that cannot work at all (a media folder that is not a directory, a `.zst` dump) raise on first use.
"""

from bl_data.sources.blift import read_blift
from bl_data.sources.reddit import read_reddit
from bl_data.sources.youtube import read_youtube

__all__ = ["read_blift", "read_reddit", "read_youtube"]

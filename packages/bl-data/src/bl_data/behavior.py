"""Behaviour targets of a sample: replay value per scene, likes as a percentage of views, top comments."""

from __future__ import annotations

from collections.abc import Sequence

from bl_data.records import Comment, HeatmapMarker, Scene


def replay_per_scene(heatmap: Sequence[HeatmapMarker] | None, scenes: Sequence[Scene]) -> list[float] | None:
    """The replay value of each scene, rounded to 2 decimals; None when there is no heatmap (None or empty).

    A scene's value is the max over the markers overlapping its [start, end) (half-open on both sides, so a
    marker ending exactly at the scene start does not count). A scene no marker overlaps (zero-length, or past
    the heatmap's end) takes the marker containing its midpoint, else the one nearest to it (ties: the earlier).
    """
    if not heatmap:
        return None
    values = []
    for scene in scenes:
        if scene.end < scene.start:
            raise ValueError(f"scene {scene.index}: end {scene.end} < start {scene.start}")
        overlapping = [m.value for m in heatmap if m.start < scene.end and m.end > scene.start]
        if overlapping:
            values.append(round(max(overlapping), 2))
            continue
        mid = (scene.start + scene.end) / 2
        nearest = min(
            heatmap, key=lambda m: (max(m.start - mid, mid - m.end, 0.0), not m.start <= mid < m.end, m.start)
        )
        values.append(round(nearest.value, 2))
    return values


def likes_percent(likes: int, views: int) -> float:
    """100 * likes / views with one decimal ("liked by 2.0% of viewers")."""
    if views <= 0:
        raise ValueError(f"likes_percent needs views > 0, got {views}")
    if likes < 0:
        raise ValueError(f"likes_percent needs likes >= 0, got {likes}")
    if likes > views:
        raise ValueError(f"likes ({likes}) exceed views ({views})")
    return round(100 * likes / views, 1)


def top_comments(comments: Sequence[Comment], k: int = 5) -> list[Comment]:
    """The `k` most-liked comments, most-liked first; equal likes keep their input order."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return sorted(comments, key=lambda c: -c.likes)[:k]

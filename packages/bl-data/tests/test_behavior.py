"""Behaviour targets against hand-computed values."""

from __future__ import annotations

import pytest

from bl_data.behavior import likes_percent, replay_per_scene, top_comments
from bl_data.records import Comment, HeatmapMarker, Scene

# A 4 s video, markers of 1 s: [0,1)=0.1, [1,2)=0.456, [2,3)=1.0, [3,4)=0.333
HEATMAP = [
    HeatmapMarker(0.0, 1.0, 0.1),
    HeatmapMarker(1.0, 2.0, 0.456),
    HeatmapMarker(2.0, 3.0, 1.0),
    HeatmapMarker(3.0, 4.0, 0.333),
]


def test_replay_is_the_max_of_overlapping_markers_rounded() -> None:
    scenes = [Scene(0, 0.0, 1.5), Scene(1, 1.5, 2.0), Scene(2, 2.0, 4.0)]
    # scene 0 overlaps [0,1) and [1,2): max(0.1, 0.456) = 0.46
    # scene 1 = [1.5, 2.0) overlaps only [1,2) (marker [2,3) starts at its end): 0.46
    # scene 2 = [2, 4) overlaps [2,3) and [3,4) but not [1,2), which ends at its start: 1.0
    assert replay_per_scene(HEATMAP, scenes) == [0.46, 0.46, 1.0]


def test_replay_boundaries_are_half_open() -> None:
    assert replay_per_scene(HEATMAP, [Scene(0, 1.0, 2.0)]) == [0.46]  # exactly one marker
    assert replay_per_scene(HEATMAP, [Scene(0, 0.999, 2.0)]) == [0.46]
    assert replay_per_scene(HEATMAP, [Scene(0, 1.0, 2.001)]) == [1.0]


def test_uncovered_scene_takes_the_marker_nearest_its_midpoint() -> None:
    # past the heatmap's end: midpoint 5.0, nearest marker [3,4)
    assert replay_per_scene(HEATMAP, [Scene(0, 4.5, 5.5)]) == [0.33]
    # zero-length scene at a marker boundary: the marker containing 2.0 is [2,3)
    assert replay_per_scene(HEATMAP, [Scene(0, 2.0, 2.0)]) == [1.0]
    # in a gap between markers: midpoint 1.5 is 0.5 from both; ties go to the earlier marker
    gapped = [HeatmapMarker(0.0, 1.0, 0.2), HeatmapMarker(2.0, 3.0, 0.9)]
    assert replay_per_scene(gapped, [Scene(0, 1.2, 1.8)]) == [0.2]
    assert replay_per_scene(gapped, [Scene(0, 1.4, 1.8)]) == [0.9]


def test_replay_without_heatmap_is_none_and_bad_scene_raises() -> None:
    assert replay_per_scene(None, [Scene(0, 0.0, 1.0)]) is None
    assert replay_per_scene([], [Scene(0, 0.0, 1.0)]) is None
    assert replay_per_scene(HEATMAP, []) == []
    with pytest.raises(ValueError, match=r"scene 3: end 1\.0 < start 2\.0"):
        replay_per_scene(HEATMAP, [Scene(3, 2.0, 1.0)])


def test_likes_percent() -> None:
    assert likes_percent(3_000, 150_000) == 2.0
    assert likes_percent(1, 3) == 33.3
    assert likes_percent(2, 3) == 66.7
    assert likes_percent(0, 10) == 0.0
    assert likes_percent(10, 10) == 100.0
    with pytest.raises(ValueError, match="views > 0"):
        likes_percent(0, 0)
    with pytest.raises(ValueError, match="likes >= 0"):
        likes_percent(-1, 10)
    with pytest.raises(ValueError, match="exceed"):
        likes_percent(11, 10)


def test_top_comments_by_likes_with_stable_ties() -> None:
    comments = [
        Comment("a", 1),
        Comment("b", 5),
        Comment("c", 1),
        Comment("d", 5),
        Comment("e", 0),
        Comment("f", 2),
    ]
    assert [c.text for c in top_comments(comments)] == ["b", "d", "f", "a", "c"]
    assert [c.text for c in top_comments(comments, k=2)] == ["b", "d"]
    assert top_comments([], k=5) == []
    with pytest.raises(ValueError):
        top_comments(comments, k=-1)

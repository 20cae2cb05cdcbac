"""A small synthetic YouTube download (clips + yt-dlp `info.json`) for the demo and the end-to-end tests.

Clips are real H.264 files with shot cuts at known times (`testing.make_clip`); the engagement is drawn
from simple rules tied to the clips (more shots -> more likes and replays), so a model can learn it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .testing import make_clip

_OPENERS = [
    "Honestly",
    "Wow",
    "I love how",
    "Can't believe",
    "This is why",
    "Every time",
    "Still watching",
    "Somehow",
]
_BODIES = [
    "the colours in this one hit different and the editing is so clean",
    "the last shot made me replay the whole thing twice in a row",
    "this ad actually made me want to go outside and try it myself",
    "the music and the cuts line up perfectly with every single scene",
    "nobody talks about how good the lighting is in the second scene",
    "my little brother watched this ten times and now he wants one",
    "the transition in the middle is the best part of the whole video",
    "this brand always finds a way to tell a story in under a minute",
]
_TITLES = [
    "Make Your Own Path",
    "Colours of the City",
    "The Long Run",
    "Small Steps",
    "Bright Mornings",
    "Home Again",
]
_CHANNELS = ["Gatorade", "Nike", "Patagonia", "Lego", "Canon", "Spotify"]


def synthesize_youtube(
    folder: str | Path, n_videos: int, *, seed: int = 0, size: tuple[int, int] = (160, 96)
) -> Path:
    """Write `n_videos` clips `<id>.mp4` with `<id>.info.json` in yt-dlp's format; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n_videos):
        video_id = f"demo{seed:02d}{i:04d}"
        n_cuts = int(rng.integers(1, 4))
        seconds = float(rng.integers(4, 8))
        cuts = np.sort(rng.choice(np.arange(1, seconds), size=n_cuts, replace=False)).tolist()
        make_clip(
            folder / f"{video_id}.mp4", size=size, fps=8, seconds=seconds, cuts=cuts, seed=seed * 1000 + i
        )
        views = int(rng.integers(20_000, 2_000_000))
        like_rate = 0.005 + 0.01 * n_cuts + float(rng.uniform(0, 0.005))  # more shots, more likes
        comments = []
        for j in rng.permutation(len(_BODIES))[: int(rng.integers(3, 7))]:
            text = f"{_OPENERS[int(rng.integers(len(_OPENERS)))]} {_BODIES[j]}"
            comments.append(
                {
                    "id": f"{video_id}c{j}",
                    "text": text,
                    "like_count": int(rng.integers(0, 5000)),
                    "author": f"viewer{int(rng.integers(1000))}",
                    "parent": "root",
                }
            )
        markers = 20
        heat = np.clip(
            0.2 + 0.2 * np.sin(np.linspace(0, np.pi * n_cuts, markers)) ** 2 + rng.uniform(0, 0.1, markers),
            0,
            1,
        )
        heat = heat / heat.max()
        step = seconds / markers
        info = {
            "id": video_id,
            "title": f"{_TITLES[i % len(_TITLES)]} | {_CHANNELS[i % len(_CHANNELS)]}",
            "channel": _CHANNELS[i % len(_CHANNELS)],
            "uploader": _CHANNELS[i % len(_CHANNELS)],
            "description": "A synthetic advertisement for the Behavior-LLaVA demo.",
            "duration": seconds,
            "upload_date": f"2024{1 + i % 12:02d}{1 + i % 28:02d}",
            "tags": ["demo", "ad"],
            "view_count": views,
            "like_count": int(views * like_rate),
            "comment_count": len(comments),
            "comments": comments,
            "heatmap": [
                {"start_time": k * step, "end_time": (k + 1) * step, "value": float(v)}
                for k, v in enumerate(heat)
            ],
        }
        (folder / f"{video_id}.info.json").write_text(json.dumps(info))
    return folder
